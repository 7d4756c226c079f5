//! The agent's options: every option of the documents with its default, read from a Helm-style
//! values file and `--set` flags, and validated as a whole at start-up.

mod effective;
mod error;
mod helm;
mod load;
mod types;
mod values;

pub use effective::{snat_port_range, AgentConfig, MAX_LB_MAP_MAX, SNAT_PORT_FLOOR};
pub use error::{ConfigError, ConfigErrors};
pub use load::load_values;
pub use types::{DevicePattern, PortRange, Protocols};
pub use values::*;

/// Reads and validates the options in one step, reporting every problem: unknown keys and
/// bad values, then the checks on the options as a whole.
pub fn load(file: Option<&std::path::Path>, sets: &[String]) -> Result<AgentConfig, ConfigErrors> {
    let (values, mut errors) = load::load_values_lenient(file, sets)?;
    match AgentConfig::from_values(values) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(more)) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}
