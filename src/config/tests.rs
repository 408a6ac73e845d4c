use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:6033"
[[backends]]
name = "n1"
host = "127.0.0.11"
role = "primary"
[[backends]]
name = "n2"
host = "127.0.0.12"
port = 3306
role = "standby"
[[users]]
name = "app"
password = "app"
[[users]]
name = "ops"
password_env = "SWITCHYARD_TEST_NO_SUCH_VAR"
policy = "primary"
"#;

fn err_of(text: &str) -> String {
    Config::from_toml(text).unwrap_err().to_string()
}

#[test]
fn good_config_parses_with_defaults() {
    let c = Config::from_toml(GOOD).unwrap();
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.backends[1].address(), "127.0.0.12:3306");
    assert_eq!(c.users[1].policy, RoutePolicy::Primary);
    assert_eq!(c.pool.max_per_user, 20);
    assert_eq!(c.server.admin_listen, "127.0.0.1:9090");
}

#[test]
fn unknown_key_is_named() {
    let e = err_of(&GOOD.replace("listen = ", "listn = "));
    assert!(e.contains("listn"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let e = err_of(&GOOD.replace("\"127.0.0.1:6033\"", "\"nowhere\""));
    assert!(e.contains("server.listen"), "{e}");
    let e = err_of(&GOOD.replace("role = \"standby\"", "role = \"primary\""));
    assert!(e.contains("more than one"), "{e}");
    let e = err_of(&GOOD.replace("name = \"n2\"", "name = \"n1\""));
    assert!(e.contains("backends[1].name"), "{e}");
    let e = err_of(&GOOD.replace("role = \"standby\"", "role = \"leader\""));
    assert!(e.contains("leader"), "{e}");
    let e = err_of(&format!("[pool]\nstatement_cache = 1000\n{GOOD}"));
    assert!(
        e.contains("pool.statement_cache") && e.contains("16382"),
        "{e}"
    );
    let e = err_of(&GOOD.replace("password = \"app\"", ""));
    assert!(e.contains("users[0].password"), "{e}");
    let e = err_of(&GOOD.replace(
        "password = \"app\"",
        "password = \"a\"\npassword_file = \"/x\"",
    ));
    assert!(e.contains("only one"), "{e}");
}

#[test]
fn env_and_file_passwords_resolve_and_never_print() {
    let mut c = Config::from_toml(GOOD).unwrap();
    let e = c.resolve_secrets().unwrap_err().to_string();
    assert!(e.contains("users[1].password_env"), "{e}");
    let dir = std::env::temp_dir().join(format!("swy-cfg-{}", std::process::id()));
    std::fs::write(&dir, "s3cret\n").unwrap();
    let text = GOOD.replace(
        "password_env = \"SWITCHYARD_TEST_NO_SUCH_VAR\"",
        &format!("password_file = {:?}", dir.display().to_string()),
    );
    let mut c = Config::from_toml(&text).unwrap();
    c.resolve_secrets().unwrap();
    std::fs::remove_file(&dir).ok();
    assert_eq!(
        c.users[1].password.password.as_ref().unwrap().expose(),
        "s3cret"
    );
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("\"app\"\n"),
        "{shown}"
    );
    assert!(!format!("{:?}", c.users[0]).contains("password: Some(\"app\")"));
}
