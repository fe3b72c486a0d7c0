//! Connection ids: unique among the hosts sharing a store, and saying which
//! host holds the socket.

/// Identifies one connection; unique among the hosts sharing a store. The
/// high [`HOST_BITS`] bits are the number of the host that holds it (0 for a
/// host on its own), the rest count up from 1 on that host.
pub type ConnId = u64;

/// Bits of a connection id that name its host.
pub const HOST_BITS: u32 = 24;

const LOCAL_BITS: u32 = 64 - HOST_BITS;

/// The host that holds connection `id`.
pub fn host_of(id: ConnId) -> u32 {
    (id >> LOCAL_BITS) as u32
}

/// The id before the first one host `host` hands out.
pub fn id_base(host: u32) -> ConnId {
    u64::from(host) << LOCAL_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_host() {
        assert_eq!(host_of(id_base(0) + 1), 0);
        assert_eq!(host_of(id_base(7) + 1), 7);
        assert_eq!(host_of(id_base((1 << HOST_BITS) - 1) + 5), (1 << HOST_BITS) - 1);
    }
}
