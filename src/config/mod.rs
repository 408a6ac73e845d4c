//! Configuration: types, TOML parsing and validation. Pure: reading password files and
//! environment variables happens in `resolve`, which the app calls once at start.

mod types;
mod validate;

pub use types::*;
pub use validate::ConfigError;

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses, validates and resolves secrets of a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let mut cfg = Config::load_unresolved(path)?;
        cfg.resolve_secrets()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a config file; passwords from the environment or files
    /// stay unread (`--check-config` runs where those secrets are not).
    pub fn load_unresolved(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(path.display().to_string(), e.to_string()))?;
        Config::from_toml(&text)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
