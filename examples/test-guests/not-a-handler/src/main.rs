//! `not-a-handler`: a plain WASI command component, for the host's tests of
//! components that target another world. Not an example.

fn main() {
    println!("I am a command, not a Wharf handler");
}
