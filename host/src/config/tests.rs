//! Config parsing and validation, each refusal naming its file and key.

use super::*;

fn parse_err(text: &str) -> ConfigError {
    Config::parse(text, "t.toml").and_then(|c| c.validate("t.toml").map(|_| c)).expect_err("config should be refused")
}

#[test]
fn unknown_top_level_key_is_named() {
    let e = parse_err("listen = \"127.0.0.1:1\"\nlisten_port = 3\n");
    assert_eq!(e.file, "t.toml");
    assert!(e.reason.contains("listen_port"), "{e}");
    assert!(e.reason.contains("line 2"), "{e}");
}

#[test]
fn bad_value_names_its_key() {
    let e = parse_err("[limits]\nmemory_mib = \"lots\"\n");
    assert_eq!(e.key, "limits.memory_mib", "{e}");
    let e = parse_err("listen = \"not an address\"\n");
    assert_eq!(e.key, "listen", "{e}");
    let e = parse_err(
        "[plugins.a]\ncomponent = \"a.wasm\"\n[[routes]]\npath = \"/a\"\nplugin = \"a\"\ninstances = \"sometimes\"\n",
    );
    assert_eq!(e.key, "routes[0].instances", "{e}");
}

#[test]
fn validation_names_the_key() {
    let e = parse_err("[[routes]]\npath = \"/a\"\nplugin = \"missing\"\n");
    assert_eq!(e.key, "routes[0].plugin");
    assert!(e.reason.contains("missing"));
    let e = parse_err("[plugins.a]\ncomponent = \"a.wasm\"\n[[routes]]\npath = \"a\"\nplugin = \"a\"\n");
    assert_eq!(e.key, "routes[0].path");
    let e = parse_err("[limits]\nevent_timeout_ms = 0\n");
    assert_eq!(e.key, "limits.event_timeout_ms");
    let e = parse_err("[limits]\nmax_instances = 0\n");
    assert_eq!(e.key, "limits.max_instances");
    let text = "[plugins.a]\ncomponent = \"a.wasm\"\n[[routes]]\npath = \"/a\"\nplugin = \"a\"\n[[routes]]\npath = \"/a\"\nplugin = \"a\"\n";
    assert_eq!(parse_err(text).key, "routes[1].path");
}

#[test]
fn namespaces_are_shared_only_when_both_plugins_say_so() {
    let base = "[plugins.a]\ncomponent = \"a.wasm\"\n[plugins.b]\ncomponent = \"b.wasm\"\n";
    let e = parse_err(&format!("{base}kv_namespace = \"a\"\n"));
    assert_eq!(e.key, "plugins.b.kv_namespace");
    let ok = "[plugins.a]\ncomponent = \"a.wasm\"\nkv_namespace = \"shop\"\n[plugins.b]\ncomponent = \"b.wasm\"\nkv_namespace = \"shop\"\n";
    let c = Config::parse(ok, "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    assert_eq!(c.namespace_of("a"), c.namespace_of("b"));
    let c = Config::parse(base, "t.toml").unwrap();
    assert_ne!(c.namespace_of("a"), c.namespace_of("b"));
    let e = parse_err("[plugins.\"bad name\"]\ncomponent = \"a.wasm\"\n");
    assert_eq!(e.key, "plugins.bad name");
}

#[test]
fn plugins_that_share_a_key_value_namespace_share_its_quota() {
    let shared = "[limits]\nkv_max_keys = 10\n[plugins.a]\ncomponent = \"a.wasm\"\nkv_namespace = \"shop\"\n\
                  [plugins.b]\ncomponent = \"b.wasm\"\nkv_namespace = \"shop\"\n";
    let c = Config::parse(shared, "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    let quota = c.limits.for_plugin(&c.plugins["a"].limits).kv_quota();
    assert_eq!((quota.max_keys, quota.max_bytes), (10, 256 << 20));
    let e = parse_err(&format!("{shared}[plugins.b.limits]\nkv_max_bytes = 1000\n"));
    assert_eq!(e.key, "plugins.b.limits.kv_max_bytes");
    assert!(e.reason.contains("share key/value namespace `shop`"), "{e}");
    let own = "[plugins.a]\ncomponent = \"a.wasm\"\n[plugins.a.limits]\nkv_max_keys = 5\n[plugins.b]\ncomponent = \"b.wasm\"\n";
    let c = Config::parse(own, "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    assert_eq!(c.limits.for_plugin(&c.plugins["a"].limits).kv_quota().max_keys, 5);
    assert_eq!(parse_err("[limits]\nkv_max_keys = 0\n").key, "limits.kv_max_keys");
}

#[test]
fn channel_namespaces_are_shared_like_key_value_ones_and_the_admin_default_names_one() {
    let base = "[plugins.a]\ncomponent = \"a.wasm\"\n[plugins.b]\ncomponent = \"b.wasm\"\n";
    let e = parse_err(&format!("{base}channel_namespace = \"a\"\n"));
    assert_eq!(e.key, "plugins.b.channel_namespace");
    assert!(e.reason.contains("set the same channel_namespace on both"), "{e}");
    assert_eq!(parse_err(&format!("{base}channel_namespace = \"a:b\"\n")).key, "plugins.b.channel_namespace");
    let shared = "[plugins.a]\ncomponent = \"a.wasm\"\nchannel_namespace = \"room\"\n\
                  [plugins.b]\ncomponent = \"b.wasm\"\nchannel_namespace = \"room\"\n";
    let c = Config::parse(shared, "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    assert_eq!(c.channel_namespace_of("a"), "room");
    assert_eq!(c.namespace_of("a"), "a", "sharing channels does not share key/value");
    assert_eq!(c.channel_namespaces(), ["room"]);
    let c = Config::parse(base, "t.toml").unwrap();
    assert_eq!(c.channel_namespaces(), ["a", "b"]);

    let e = parse_err(&format!("[admin]\ndefault_channel_namespace = \"nope\"\n{base}"));
    assert_eq!(e.key, "admin.default_channel_namespace");
    assert!(e.reason.contains("they are: a, b"), "{e}");
    let c = Config::parse(&format!("[admin]\ndefault_channel_namespace = \"b\"\n{base}"), "t.toml").unwrap();
    c.validate("t.toml").unwrap();
}

#[test]
fn admin_without_token_stays_on_loopback() {
    let e = parse_err("[admin]\nlisten = \"0.0.0.0:8081\"\n");
    assert_eq!(e.key, "admin.listen");
    let c = Config::parse("[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"t\"\n", "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    let e = parse_err("store = \"cloud\"\n");
    assert_eq!(e.key, "store");
}

#[test]
fn the_store_is_a_name_a_redis_url_or_a_table() {
    let c = Config::parse("", "t.toml").unwrap();
    assert_eq!(c.store, StoreConfig { backend: StoreChoice::Embedded, heartbeat_ttl_ms: 10_000 });
    let c = Config::parse("store = \"memory\"\n", "t.toml").unwrap();
    assert_eq!(c.store.backend, StoreChoice::Memory);
    let c = Config::parse("store = \"redis://127.0.0.1:6379/2\"\n", "t.toml").unwrap();
    assert_eq!(c.store.backend, StoreChoice::Redis("redis://127.0.0.1:6379/2".into()));
    let table = "[store]\nbackend = \"redis://10.0.0.5:6380/0\"\nheartbeat_ttl_ms = 4000\n";
    let c = Config::parse(table, "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    assert_eq!(c.store.backend, StoreChoice::Redis("redis://10.0.0.5:6380/0".into()));
    assert_eq!(c.store.heartbeat_ttl_ms, 4000);

    let e = parse_err("store = \"redis://127.0.0.1:notaport/0\"\n");
    assert_eq!(e.key, "store");
    assert!(e.reason.contains("not a Redis URL"), "{e}");
    let e = parse_err("[store]\nbackend = \"redis://h:1/0\"\nheartbeat_ttl_ms = 10\n");
    assert_eq!(e.key, "store.heartbeat_ttl_ms");
    let e = parse_err("[store]\nbackend = \"memory\"\nttl = 3\n");
    assert!(e.key.starts_with("store"), "{e}");
    assert!(e.reason.contains("ttl"), "{e}");
    assert_eq!("redis://h:1/0".parse::<StoreChoice>(), Ok(StoreChoice::Redis("redis://h:1/0".into())));
    assert!("postgres://h".parse::<StoreChoice>().unwrap_err().contains("redis://HOST:PORT/DB"));
}

#[test]
fn plugin_and_route_limits_override_and_are_checked() {
    let base = "[limits]\nmemory_mib = 32\nping_interval_ms = 1000\n[plugins.a]\ncomponent = \"a.wasm\"\n";
    let route = "[[routes]]\npath = \"/a\"\nplugin = \"a\"\n";
    let ok = format!(
        "{base}[plugins.a.limits]\nevent_timeout_ms = 20\n{route}origins = [\"https://x.example\"]\n\
         subprotocols = [\"v1\"]\n[routes.limits]\nping_interval_ms = 0\nslow_reader = \"drop-oldest\"\n"
    );
    let c = Config::parse(&ok, "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    let plugin = c.limits.for_plugin(&c.plugins["a"].limits);
    assert_eq!((plugin.event_timeout_ms, plugin.memory_mib), (20, 32));
    let r = c.limits.for_route(&c.routes[0].limits);
    assert_eq!((r.ping_interval_ms, r.slow_reader, r.memory_mib), (0, SlowReader::DropOldest, 32));

    let e = parse_err(&format!("{base}[plugins.a.limits]\nmemory_mib = 64\n"));
    assert_eq!(e.key, "plugins.a.limits.memory_mib");
    assert!(e.reason.contains("at most limits.memory_mib (32)"), "{e}");
    let e = parse_err(&format!("{base}[plugins.a.limits]\nevent_timeout_ms = 0\n"));
    assert_eq!(e.key, "plugins.a.limits.event_timeout_ms");
    let e = parse_err(&format!("{base}{route}[routes.limits]\nmissed_pongs = 0\n"));
    assert_eq!(e.key, "routes[0].limits.missed_pongs");
    let e = parse_err(&format!("{base}{route}[routes.limits]\nmax_connections = 0\n"));
    assert_eq!(e.key, "routes[0].limits.max_connections");
    let e = parse_err(&format!("{base}{route}origins = [\"x.example/\"]\n"));
    assert_eq!(e.key, "routes[0].origins[0]");
    let e = parse_err(&format!("{base}{route}subprotocols = [\"a b\"]\n"));
    assert_eq!(e.key, "routes[0].subprotocols[0]");
    let e = parse_err(&format!("{base}{route}[routes.limits]\nslow_reader = \"drop-newest\"\n"));
    assert_eq!(e.key, "routes[0].limits.slow_reader");
    let e = parse_err("[limits]\nwrite_timeout_ms = 1\n");
    assert_eq!(e.key, "limits.write_timeout_ms");
}

#[test]
fn an_admin_token_that_could_never_match_is_refused() {
    for bad in ["", " ", "two words", "tab\tted", "caf\u{e9}", " padded "] {
        let e = parse_err(&format!("[admin]\ntoken = {bad:?}\n"));
        assert_eq!(e.key, "admin.token", "{bad:?}: {e}");
        assert!(e.reason.contains("visible ASCII"), "{e}");
    }
    let c = Config::parse("[admin]\ntoken = \"s3cr3t-T0ken_with.symbols~\"\n", "t.toml").unwrap();
    c.validate("t.toml").unwrap();
}

#[test]
fn a_route_path_that_could_never_match_is_refused() {
    let plugin = "[plugins.a]\ncomponent = \"a.wasm\"\n";
    for bad in ["/a?b", "/a#top", "/a b", "/a\tb"] {
        let e = parse_err(&format!("{plugin}[[routes]]\npath = {bad:?}\nplugin = \"a\"\n"));
        assert_eq!(e.key, "routes[0].path", "{bad:?}: {e}");
        assert!(e.reason.contains("not a path"), "{e}");
    }
}

#[test]
fn static_dir_is_neither_the_root_nor_around_the_data() {
    let e = parse_err("static_dir = \"/\"\n");
    assert_eq!(e.key, "static_dir", "{e}");
    assert!(e.reason.contains("whole filesystem"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().display();
    let e = parse_err(&format!("static_dir = \"{site}\"\ndata_dir = \"{site}/data\"\n"));
    assert_eq!(e.key, "static_dir", "{e}");
    assert!(e.reason.contains("contains the data directory"), "{e}");
    let ok = format!("static_dir = \"{site}\"\ndata_dir = \"{}\"\n", std::env::temp_dir().join("elsewhere").display());
    Config::parse(&ok, "t.toml").unwrap().validate("t.toml").unwrap();
}

#[test]
fn the_instance_memory_budget_fits_the_machine_and_one_instance() {
    let e = parse_err("[limits]\ninstance_memory_mib = 16000000\n");
    assert_eq!(e.key, "limits.instance_memory_mib", "{e}");
    assert!(e.reason.contains("this machine's memory"), "{e}");
    let e = parse_err("[limits]\nmemory_mib = 64\ninstance_memory_mib = 32\n");
    assert_eq!(e.key, "limits.instance_memory_mib", "{e}");
    assert!(e.reason.contains("at least limits.memory_mib (64)"), "{e}");
}

#[test]
fn an_empty_key_is_named_by_its_table() {
    let e = parse_err("\"\" = 1\n");
    assert_eq!(e.key, "(top level)", "{e}");
    assert!(e.reason.contains("unknown field ``"), "{e}");
}

#[test]
fn syntax_error_has_position() {
    let e = parse_err("listen = \n");
    assert_eq!(e.key, "(syntax)");
    assert!(e.reason.contains("line 1"), "{e}");
}

mod fuzz {
    use super::*;
    use crate::fuzzing::{edits, mutate, tomlish};
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "listen",
        "static_dir",
        "store",
        "data_dir",
        "[limits]",
        "[admin]",
        "[plugins.a]",
        "[[routes]]",
        "[routes.limits]",
        "[plugins.a.limits]",
        "component",
        "path",
        "plugin",
        "instances",
        "origins",
        "subprotocols",
        "memory_mib",
        "max_connections",
        "ping_interval_ms",
        "slow_reader",
        "\"drop-oldest\"",
        "\"/a\"",
        "\"a\"",
        "\"a.wasm\"",
        "token",
        "enabled",
        "true",
        "kv_namespace",
        "channel_namespace",
        "default_channel_namespace",
        "connect_rate",
    ];

    /// Parsing and validating never panics; a refusal names the file, a
    /// key and a reason, on one line.
    fn check(text: &str) {
        if let Err(e) = Config::parse(text, "fuzz.toml").and_then(|c| c.validate("fuzz.toml")) {
            assert_eq!(e.file, "fuzz.toml");
            assert!(!e.key.is_empty() && !e.reason.is_empty(), "{e:?}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn edited_example_configs(edits in edits(6)) {
            let text = include_str!("../../../examples/wharf.toml");
            check(&mutate(text, &edits));
        }

        #[test]
        fn token_soup(text in tomlish(KEYS)) {
            check(&text);
        }

        #[test]
        fn random_text(text in ".{0,200}") {
            check(&text);
        }
    }
}

#[test]
fn example_config_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wharf.toml");
    let c = Config::load(&path).expect("examples/wharf.toml is valid");
    let paths: Vec<_> = c.routes.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/echo",
            "/chat",
            "/broadcast",
            "/counter",
            "/js/echo",
            "/js/chat",
            "/ts/echo",
            "/ts/chat",
            "/ts/counter",
            "/py/echo",
            "/py/chat",
            "/py/counter",
            "/rooms",
            "/ts/rooms",
            "/py/rooms",
            "/countdown",
            "/ts/countdown",
            "/py/countdown",
            "/app/login",
            "/app",
            "/limited"
        ]
    );
    assert!(c.static_dir.is_some());
    let rooms = c.history_rules();
    for plugin in ["rooms", "ts-rooms", "py-rooms"] {
        let lobby = format!("{plugin}:room:lobby");
        assert_eq!(rooms.limits(&lobby).map(|l| l.size), Some(100), "the rooms page's rooms keep history");
    }
    assert_eq!(rooms.limits("chat:room"), None, "the chat page's room keeps none");
}

#[test]
fn a_route_names_a_backend_by_url_or_by_table() {
    let c =
        Config::parse("[[routes]]\npath = \"/chat\"\nbackend = \"http://127.0.0.1:8090/base\"\n", "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    let b = c.routes[0].backend.as_ref().unwrap();
    assert_eq!((b.url.as_str(), b.timeout_ms, b.retries), ("http://127.0.0.1:8090/base", 10_000, 5));
    assert_eq!(b.channel_namespace(), DEFAULT_BACKEND_NAMESPACE);
    let table = "[[routes]]\npath = \"/chat\"\n[routes.backend]\nurl = \"http://b:1/\"\nretries = 0\nsig_key = \"k\"\nchannel_namespace = \"rooms\"\n";
    let c = Config::parse(table, "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    let b = c.routes[0].backend.as_ref().unwrap();
    assert_eq!((b.retries, b.sig_key.as_deref(), b.channel_namespace()), (0, Some("k"), "rooms"));
    assert_eq!(c.channel_namespaces(), ["rooms"], "a backend's namespace is one the admin API knows");
}

#[test]
fn a_bad_backend_is_refused_with_its_key() {
    let route = |rest: &str| format!("[[routes]]\npath = \"/a\"\n{rest}");
    let cases = [
        (route("backend = \"not a url\"\n"), "routes[0].backend", "is not a URL"),
        (route("backend = \"/relative\"\n"), "routes[0].backend", "not an http:// URL"),
        (route("backend = \"https://b:1/\"\n"), "routes[0].backend", "https backends are not supported"),
        (route("backend = \"http://b:1/?x=1\"\n"), "routes[0].backend", "has a query"),
        (route("[routes.backend]\nurl = \"ftp://b/\"\n"), "routes[0].backend.url", "not an http:// URL"),
        (route("[routes.backend]\nurl = \"http://b/\"\nretries = 99\n"), "routes[0].backend.retries", "0..=20"),
        (
            route("[routes.backend]\nurl = \"http://b/\"\nmax_concurrent_requests = 0\n"),
            "routes[0].backend.max_concurrent_requests",
            "1..=10000",
        ),
        (
            route("[routes.backend]\nurl = \"http://b/\"\ntimeout = 3\n"),
            "routes[0].backend.timeout",
            "unknown field `timeout`",
        ),
        (route("[routes.backend]\nurl = \"http://b/\"\nsig_key = \"\"\n"), "routes[0].backend.sig_key", "empty"),
        (route("[routes.backend]\nretries = 1\n"), "routes[0].backend", "missing field `url`"),
        (route("backend = 3\n"), "routes[0].backend", "a URL or a table"),
        (
            route("[routes.backend]\nurl = \"http://b/\"\nchannel_namespace = \"a:b\"\n"),
            "routes[0].backend.channel_namespace",
            "letters",
        ),
        (route(""), "routes[0]", "names no plugin and no backend"),
        (
            format!("[plugins.p]\ncomponent = \"p.wasm\"\n{}", route("plugin = \"p\"\nbackend = \"http://b/\"\n")),
            "routes[0]",
            "names a plugin and a backend",
        ),
    ];
    for (text, key, reason) in cases {
        let e = parse_err(&text);
        assert_eq!(e.key, key, "{text}: {e}");
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
}

#[test]
fn a_bad_trusted_proxy_is_named() {
    let e = parse_err("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/99\"]\n");
    assert_eq!(e.key, "trusted_proxies[1]", "{e}");
    assert!(e.reason.contains("10.0.0.0/99"), "{e}");
    let c = Config::parse("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n", "t.toml").unwrap();
    c.validate("t.toml").unwrap();
}

#[test]
fn a_route_auth_names_exactly_one_key_and_compression_is_deflate_or_off() {
    let route = "[plugins.a]\ncomponent = \"a.wasm\"\n[[routes]]\npath = \"/a\"\nplugin = \"a\"\n";
    let e = parse_err(&format!("{route}[routes.auth]\naudience = \"x\"\n"));
    assert_eq!(e.key, "routes[0].auth", "{e}");
    assert!(e.reason.contains("names no key"), "{e}");
    let e = parse_err(&format!("{route}[routes.auth]\nhs256_secret_file = \"s\"\npublic_key_file = \"k.pem\"\n"));
    assert!(e.reason.contains("hs256_secret_file and public_key_file") && e.reason.contains("exactly one"), "{e}");
    let e = parse_err(&format!("{route}[routes.auth]\nhs256_secret_env = \"WHARF_TEST_SURELY_UNSET_VARIABLE\"\n"));
    assert_eq!(e.key, "routes[0].auth.hs256_secret_env", "{e}");
    assert!(e.reason.contains("WHARF_TEST_SURELY_UNSET_VARIABLE"), "{e}");
    let e = parse_err(&format!("{route}[routes.auth]\nhs256_secret_file = \"s\"\nalgorithm = \"none\"\n"));
    assert_eq!(e.key, "routes[0].auth.algorithm", "a token cannot be told to choose its algorithm: {e}");
    let e = parse_err(&format!("{route}compression = \"gzip\"\n"));
    assert_eq!(e.key, "routes[0].compression", "{e}");
    let ok = Config::parse(&format!("{route}compression = \"deflate\"\n"), "t.toml").unwrap();
    assert_eq!(ok.routes[0].compression, Compression::Deflate);
}

#[test]
fn channel_history_tables_are_checked_key_by_key() {
    let plugin = "[plugins.chat]\ncomponent = \"c.wasm\"\n";
    let table = |body: &str| format!("{plugin}[[channels]]\n{body}\n");
    let good = "match = \"room*\"\nhistory_size = 100\nhistory_ttl_ms = 60000";
    let c = Config::parse(&table(good), "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    let rules = c.history_rules();
    assert_eq!(rules.limits("chat:room-1").map(|l| (l.size, l.max_bytes)), Some((100, 1 << 20)));
    assert_eq!(rules.limits("chat:lobby"), None);
    for (body, key) in [
        ("match = \"ro*om\"\nhistory_size = 1\nhistory_ttl_ms = 1", "channels[0].match"),
        ("match = \"\"\nhistory_size = 1\nhistory_ttl_ms = 1", "channels[0].match"),
        ("match = \"r\"\nhistory_size = 0\nhistory_ttl_ms = 1", "channels[0].history_size"),
        ("match = \"r\"\nhistory_size = 10001\nhistory_ttl_ms = 1", "channels[0].history_size"),
        ("match = \"r\"\nhistory_size = 1\nhistory_ttl_ms = 0", "channels[0].history_ttl_ms"),
        ("match = \"r\"\nhistory_size = 1\nhistory_ttl_ms = 1\nhistory_max_bytes = 0", "channels[0].history_max_bytes"),
        ("match = \"r\"\nnamespace = \"nope\"\nhistory_size = 1\nhistory_ttl_ms = 1", "channels[0].namespace"),
    ] {
        let e = parse_err(&table(body));
        assert_eq!(e.key, key, "{body}: {e}");
    }
    let e = parse_err(&table("match = \"r\"\nhistory_size = 1"));
    assert!(e.reason.contains("history_ttl_ms"), "a missing key is named: {e}");
}

#[test]
fn a_route_chains_plugins_and_selects_by_field_each_name_checked() {
    let plugins = "[plugins.auth]\ncomponent = \"a.wasm\"\n[plugins.rooms]\ncomponent = \"r.wasm\"\n\
                   [plugins.chat]\ncomponent = \"c.wasm\"\n";
    let text = format!(
        "{plugins}[[routes]]\npath = \"/app\"\nplugins = [\"auth\", \"rooms\"]\n\
         [routes.select]\nfield = \"action\"\ndefault = \"rooms\"\n[routes.select.handlers]\njoin = \"rooms\"\nsay = \"chat\"\n"
    );
    let c = Config::parse(&text, "t.toml").unwrap();
    c.validate("t.toml").unwrap();
    assert_eq!(c.routes[0].chain(), ["auth", "rooms"]);
    let select = c.routes[0].select.as_ref().unwrap();
    assert_eq!((select.field.as_str(), select.handlers["say"].as_str()), ("action", "chat"));
    let one = Config::parse(&format!("{plugins}[[routes]]\npath = \"/a\"\nplugin = \"auth\"\n"), "t.toml").unwrap();
    assert_eq!(one.routes[0].chain(), ["auth"], "`plugin = ...` is a chain of one");
    // A default alone sends every message to it (a limiter in front).
    let text = format!(
        "{plugins}[[routes]]\npath = \"/a\"\nplugins = [\"auth\", \"chat\"]\nselect = {{ default = \"auth\" }}\n"
    );
    let front = Config::parse(&text, "t.toml").unwrap();
    front.validate("t.toml").unwrap();
    assert_eq!(front.routes[0].select.as_ref().unwrap().field, "");

    for (route, key, reason) in [
        ("plugins = [\"auth\", \"nobody\"]", "routes[0].plugins[1]", "no plugin named `nobody`"),
        ("plugins = [\"auth\", \"auth\"]", "routes[0].plugins[1]", "twice"),
        ("plugin = \"auth\"\nplugins = [\"auth\"]", "routes[0]", "use one"),
        ("plugins = []", "routes[0]", "names no plugin"),
        (
            "plugins = [\"auth\"]\n[routes.select]\nfield = \"\"\n[routes.select.handlers]\nx = \"auth\"",
            "routes[0].select.field",
            "top-level field",
        ),
        ("plugins = [\"auth\"]\n[routes.select]\nfield = \"a\"", "routes[0].select", "a default"),
        (
            "plugins = [\"auth\"]\n[routes.select]\nfield = \"a\"\n[routes.select.handlers]\nx = \"ghost\"",
            "routes[0].select.handlers.x",
            "no plugin named `ghost`",
        ),
        (
            "plugins = [\"auth\"]\n[routes.select]\nfield = \"a\"\ndefault = \"ghost\"",
            "routes[0].select.default",
            "ghost",
        ),
        ("backend = \"http://127.0.0.1:1/\"\n[routes.select]\nfield = \"a\"", "routes[0].select", "not a backend"),
    ] {
        let e = parse_err(&format!("{plugins}[[routes]]\npath = \"/a\"\n{route}\n"));
        assert_eq!(e.key, key, "{route}: {e}");
        assert!(e.reason.contains(reason), "{route}: {e}");
    }
}
