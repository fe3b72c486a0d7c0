//! `wharf test` and `wharf new` as a handler author uses them: the binary,
//! real components, scenario files, exit status and reports.

use std::process::{Command, Output};

use crate::common::*;

fn wharf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wharf")).args(args).env_remove("RUST_LOG").output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn example_scenarios(name: &str) -> Vec<String> {
    let dir = repo_root().join(format!("examples/{name}/tests"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "examples/{name} ships no scenarios");
    files
}

#[test]
fn every_example_passes_its_scenarios() {
    for name in ["echo", "chat", "broadcast", "counter"] {
        let wasm = component(name).display().to_string();
        let mut args = vec!["test", wasm.as_str()];
        let scenarios = example_scenarios(name);
        args.extend(scenarios.iter().map(String::as_str));
        let out = wharf(&args);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{name}:\n{stdout}\n{stderr}");
        let last = stdout.lines().last().unwrap_or_default();
        assert_eq!(last, format!("{} passed, 0 failed", 5 + scenarios.len()), "{stdout}");
        assert!(stdout.lines().all(|l| l.starts_with("ok   ") || l == last), "{stdout}");
        assert!(stderr.is_empty(), "a passing run is quiet on stderr: {stderr}");
    }
}

#[test]
fn subprotocols_rejects_and_host_closes_can_be_scripted() {
    let wasm = component("faulty").display().to_string();
    let scenario = repo_root().join("examples/test-guests/faulty/tests/faulty.toml").display().to_string();
    let out = wharf(&["test", &wasm, &scenario]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("ok   scenario faulty: subprotocols, rejects and handler closes"), "{stdout}");

    // A close with another code than expected fails with what happened.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-close.toml");
    std::fs::write(&wrong, "[[step]]\nclient = \"a\"\nopen = \"/\"\n[[step]]\nclient = \"a\"\nsend = \"bye\"\n[[step]]\nclient = \"a\"\nexpect_close = 1000\n").unwrap();
    let out = wharf(&["test", &wasm, wrong.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.contains("step[2]: a expected Close(1000), got close 4000"), "{stdout}");
}

#[test]
fn a_failing_scenario_fails_the_run_and_the_junit_report() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("wrong.toml");
    std::fs::write(
        &scenario,
        "name = \"expects the wrong echo\"\n[[step]]\nclient = \"a\"\nopen = \"/\"\n[[step]]\nclient = \"a\"\nsend = \"x\"\n\
         [[step]]\nclient = \"a\"\nexpect = \"y\"\n",
    )
    .unwrap();
    let junit = dir.path().join("report.xml");
    let wasm = component("echo").display().to_string();
    let out = wharf(&["test", &wasm, scenario.to_str().unwrap(), "--format", "junit", junit.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success());
    assert!(
        stdout.contains("FAIL scenario expects the wrong echo: step[2]: a expected Text(\"y\"), got text \"x\""),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some("5 passed, 1 failed"));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"6\" failures=\"1\""), "{xml}");
    assert!(
        xml.contains("<failure message=\"step[2]: a expected Text(&quot;y&quot;), got text &quot;x&quot;\"/>"),
        "{xml}"
    );
}

#[test]
fn start_code_that_traps_fails_the_smoke_test() {
    let wasm = component("trap-on-start").display().to_string();
    let out = wharf(&["test", &wasm]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.contains("FAIL smoke: open: on-open failed: handler trapped"), "{stdout}");
    assert!(stderr.contains("this component traps while starting"), "the panic message is logged: {stderr}");
}

#[test]
fn a_trapping_handler_fails_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("panic.toml");
    std::fs::write(&scenario, "[[step]]\nclient = \"a\"\nopen = \"/\"\n[[step]]\nclient = \"a\"\nsend = \"panic\"\n")
        .unwrap();
    let wasm = component("faulty").display().to_string();
    let out = wharf(&["test", &wasm, scenario.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.contains("FAIL scenario panic: step[1]: on-message failed: handler trapped"), "{stdout}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A broken scenario file: named, with its step.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[step]]\nclient = \"a\"\nsend = \"x\"\nexpect = \"y\"\n").unwrap();
    let wasm = component("echo").display().to_string();
    let out = wharf(&["test", &wasm, broken.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("broken.toml") && stderr.contains("step[0]"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A missing component.
    let out = wharf(&["test", "/nonexistent/x.wasm"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/x.wasm"), "{stderr}");

    // Not a component, and a component of another world: the world check fails.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"junk").unwrap();
    let command = repo_root().join("target/wasm32-wasip2/release/not-a-handler.wasm");
    for (file, why) in [(junk, "not a valid component"), (command, "does not export the wharf:handler world")] {
        let out = wharf(&["test", file.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(stdout.starts_with("FAIL world: ") && stdout.contains(why), "{stdout}\n{stderr}");
        assert_eq!(stdout.lines().last(), Some("0 passed, 1 failed"));
    }

    let out = wharf(&["test", &wasm, "--format", "xml", "out.xml"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("unknown format `xml`"));
}

#[test]
fn wharf_new_refuses_bad_names_and_existing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_wharf")).current_dir(dir.path()).args(["new", "Bad Name"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).1.contains("not a project name"));
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_wharf")).current_dir(dir.path()).args(["new", "taken"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).1.contains("already exists"));
    let out =
        Command::new(env!("CARGO_BIN_EXE_wharf")).current_dir(dir.path()).args(["new", "fresh"]).output().unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    for file in ["Cargo.toml", "src/lib.rs", "tests/basic.toml", "README.md"] {
        assert!(dir.path().join("fresh").join(file).is_file(), "{file} missing");
    }
    let new =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_wharf")).current_dir(dir.path()).args(args).output().unwrap();
    let out = new(&["new", "odd", "--lang", "cobol"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("unknown language `cobol`: use rust, js, ts or python"), "{:?}", text(&out));
    for (lang, files) in [
        ("js", &["package.json", "src/index.js"][..]),
        ("ts", &["package.json", "tsconfig.json", "src/index.ts"][..]),
        ("python", &["app.py"][..]),
    ] {
        let name = format!("fresh-{lang}");
        let out = new(&["new", &name, "--lang", lang]);
        assert!(out.status.success(), "{:?}", text(&out));
        for file in files.iter().chain(&["tests/basic.toml", "README.md"]) {
            assert!(dir.path().join(&name).join(file).is_file(), "{lang}: {file} missing");
        }
        let scenario = std::fs::read_to_string(dir.path().join(&name).join("tests/basic.toml")).unwrap();
        assert!(scenario.contains(&format!("{name}: hello (#1)")), "{lang}: {scenario}");
    }
}

#[test]
fn a_config_of_several_handlers_is_tested_as_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("app.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.faulty]\ncomponent = {:?}\n[plugins.echo]\ncomponent = {:?}\n\
             [[routes]]\npath = \"/chain\"\nplugins = [\"faulty\", \"echo\"]\n\
             [routes.select]\nfield = \"to\"\ndefault = \"faulty\"\n[routes.select.handlers]\necho = \"echo\"\n",
            component("faulty").display().to_string(),
            component("echo").display().to_string(),
        ),
    )
    .unwrap();
    let scenario = dir.path().join("chain.toml");
    std::fs::write(
        &scenario,
        "name = \"a chain, its selection and a forward\"\n\
         [[step]]\nkv = \"greeting\"\nplugin = \"faulty\"\nset = \"hi\"\n\
         [[step]]\nclient = \"a\"\nopen = \"/chain?reject=403\"\nexpect_reject = 403\n\
         [[step]]\nclient = \"a\"\nopen = \"/chain\"\n\
         [[step]]\nclient = \"a\"\nsend = \"get:greeting\"\n\
         [[step]]\nclient = \"a\"\nexpect = \"hi\"\n\
         [[step]]\nclient = \"a\"\nsend = '{\"to\":\"echo\",\"n\":1}'\n\
         [[step]]\nclient = \"a\"\nexpect_json = { to = \"echo\", n = 1 }\n\
         [[step]]\nclient = \"a\"\nsend = \"forward:echo:on\"\n\
         [[step]]\nclient = \"a\"\nexpect = \"on\"\n\
         [[step]]\nclient = \"a\"\nexpect = \"forwarded\"\n\
         [[step]]\nclient = \"a\"\nclose = 1000\n\
         [[step]]\nkv = \"closed\"\nplugin = \"faulty\"\nequals = \"1\"\n",
    )
    .unwrap();
    let out = wharf(&["test", "--config", config.to_str().unwrap(), scenario.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("ok   config ") && stdout.contains("2 plugins, 1 routes"), "{stdout}");
    assert!(stdout.contains("ok   scenario a chain, its selection and a forward"), "{stdout}");

    // A kv step without `plugin` in a config of two plugins is refused, by name.
    std::fs::write(&scenario, "[[step]]\nkv = \"closed\"\n").unwrap();
    let out = wharf(&["test", "--config", config.to_str().unwrap(), scenario.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.contains("name whose key/value this is"), "{stdout}");
    // Without a component or a config: a clear error.
    let out = wharf(&["test", scenario.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("is not a component (.wasm)"), "{}", text(&out).1);
}
