use std::path::PathBuf;

use rcgen::{date_time_ymd, CertificateParams, KeyPair};

use super::*;
use crate::config::SniCertificateConfig;

/// A self-signed certificate for `names`, with its key, as PEM.
fn issue(names: &[&str]) -> (String, String) {
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn certified(names: &[&str]) -> Arc<CertifiedKey> {
    let (cert, key) = issue(names);
    let chain = transport_tls::certificates(cert.as_bytes(), "test").unwrap();
    let key = transport_tls::private_key(key.as_bytes(), "test").unwrap();
    let signing_key = rustls::crypto::ring::default_provider().key_provider.load_private_key(key).unwrap();
    Arc::new(CertifiedKey::new(chain, signing_key))
}

/// Default certificate 0; 1 for `api.example.com`; 2 for `*.apps.example.com`.
fn resolver(strict: bool) -> SniResolver {
    let mut resolver = SniResolver::new(strict);
    resolver.add(certified(&["default.test"]));
    let api = resolver.add(certified(&["api.example.com"]));
    resolver.claim("api.example.com", api).unwrap();
    let apps = resolver.add(certified(&["*.apps.example.com"]));
    resolver.claim("*.apps.example.com", apps).unwrap();
    resolver.claim("default.test", 0).unwrap();
    resolver
}

/// The index of the certificate `resolver` picks for `name`.
fn picked(resolver: &SniResolver, name: Option<&str>) -> Option<usize> {
    let chosen = resolver.pick(name)?;
    resolver.certificates.iter().position(|c| Arc::ptr_eq(c, chosen))
}

#[test]
fn exact_names_pick_their_certificate_whatever_the_case() {
    let resolver = resolver(false);
    assert_eq!(picked(&resolver, Some("api.example.com")), Some(1));
    assert_eq!(picked(&resolver, Some("API.Example.COM.")), Some(1));
    assert_eq!(picked(&resolver, Some("default.test")), Some(0));
}

#[test]
fn a_wildcard_matches_exactly_one_label() {
    let resolver = resolver(false);
    assert_eq!(picked(&resolver, Some("x.apps.example.com")), Some(2));
    assert_eq!(picked(&resolver, Some("a.b.apps.example.com")), Some(0), "two labels: not the wildcard's");
    assert_eq!(picked(&resolver, Some("apps.example.com")), Some(0), "no label: not the wildcard's");
    assert_eq!(picked(&resolver, Some(".apps.example.com")), Some(0), "empty label: not the wildcard's");
}

#[test]
fn an_unknown_name_or_none_gets_the_default_certificate() {
    let resolver = resolver(false);
    assert_eq!(picked(&resolver, Some("unknown.example.org")), Some(0));
    assert_eq!(picked(&resolver, None), Some(0));
}

#[test]
fn strict_sni_refuses_unknown_names_and_none() {
    let resolver = resolver(true);
    assert_eq!(picked(&resolver, Some("unknown.example.org")), None);
    assert_eq!(picked(&resolver, None), None);
    assert_eq!(picked(&resolver, Some("a.b.apps.example.com")), None);
    assert_eq!(picked(&resolver, Some("x.apps.example.com")), Some(2));
    assert_eq!(picked(&resolver, Some("default.test")), Some(0), "the default's own names are claimed");
}

#[test]
fn a_name_is_claimed_once() {
    let mut resolver = resolver(false);
    assert_eq!(resolver.claim("API.example.com", 2), Err(1));
    assert_eq!(resolver.claim("*.apps.example.com", 0), Err(2));
}

/// PEM files in a fresh directory.
struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("weir-tls-unit-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn keys_of(problems: &[CertificateProblem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn every_problem_names_its_config_key() {
    let files = Files::new("problems");
    let (cert, key) = issue(&["default.test"]);
    let (other_cert, _) = issue(&["api.example.com"]);
    let mut params = CertificateParams::new(vec!["old.example.com".to_owned()]).unwrap();
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2001, 1, 1);
    let old_key = KeyPair::generate().unwrap();
    let expired = params.self_signed(&old_key).unwrap().pem();
    let (api_cert, api_key) = issue(&["api.example.com"]);
    let mut config = ServerTlsConfig::new(files.write("cert.pem", &cert), files.write("key.pem", &key));
    let entry = |names: &[&str], cert: PathBuf, key: PathBuf| SniCertificateConfig {
        names: names.iter().map(|n| n.to_string()).collect(),
        cert,
        key,
    };
    config.certificates = vec![
        entry(&["api.example.com"], files.write("other.pem", &other_cert), files.write("key2.pem", &key)),
        entry(&["old.example.com"], files.write("old.pem", &expired), files.write("old.key", &old_key.serialize_pem())),
        entry(
            &["api.example.com", "www.example.com"],
            files.write("api.pem", &api_cert),
            files.write("api.key", &api_key),
        ),
        entry(&["x.test"], files.0.join("missing.pem"), files.write("k3.pem", &key)),
    ];
    let problems = ClientTls::check(&config, SystemTime::now());
    let keys = keys_of(&problems);
    assert_eq!(
        keys,
        [
            "server.tls.certificates[0].key",
            "server.tls.certificates[1].cert",
            "server.tls.certificates[2].names",
            "server.tls.certificates[3].cert",
        ],
        "{problems:?}"
    );
    assert!(problems[0].message.contains("is not the key of the certificate"), "{}", problems[0]);
    assert!(problems[1].message.contains("expired on 2001-01-01"), "{}", problems[1]);
    assert!(problems[2].message.contains("not valid for `www.example.com`"), "{}", problems[2]);
    let err = ClientTls::load(&config).unwrap_err();
    assert_eq!(err.problems, problems);
}

#[test]
fn a_sound_configuration_loads_and_duplicates_are_refused() {
    let files = Files::new("sound");
    let (cert, key) = issue(&["default.test"]);
    let (api_cert, api_key) = issue(&["api.example.com", "*.apps.example.com"]);
    let mut config = ServerTlsConfig::new(files.write("cert.pem", &cert), files.write("key.pem", &key));
    let api = SniCertificateConfig {
        names: vec!["api.example.com".into(), "*.apps.example.com".into()],
        cert: files.write("api.pem", &api_cert),
        key: files.write("api.key", &api_key),
    };
    config.certificates = vec![api.clone()];
    ClientTls::load(&config).expect("loads");
    config.certificates.push(api);
    let problems = ClientTls::check(&config, SystemTime::now());
    assert_eq!(keys_of(&problems), ["server.tls.certificates[1].names"; 2], "{problems:?}");
}
