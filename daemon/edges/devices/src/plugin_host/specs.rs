//! The devices the config names, as the host runs them ([`DeviceSpec`]), and the probe that
//! `leitsystemd plugins` runs on them.

use super::{EMIT_QUEUE, Instance, LoadedPlugin, PluginError, load_plugin, resolve_plugin};
use leitsystem_plugin::messages::Role;
use leitsystem_runtime::config::Config;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::mpsc;

/// One configured device, resolved.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Device id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Desks it may act for (buttons); empty = any.
    pub desks: Vec<String>,
    /// The check-in terminal it belongs to (scanners, printers).
    pub terminal: Option<String>,
    /// Departments whose tickets it prints (printers); empty = any.
    pub departments: Vec<String>,
    /// The plugin file.
    pub plugin_path: PathBuf,
    /// Plugin options (JSON).
    pub options: serde_json::Value,
}

pub(crate) fn parse_role(role: &str) -> Option<Role> {
    Some(match role {
        "scanner" => Role::Scanner,
        "buttons" => Role::Buttons,
        "printer" => Role::Printer,
        "display" => Role::Display,
        _ => return None,
    })
}

/// Replaces `${data_dir}` in every string option.
pub(crate) fn substitute(value: serde_json::Value, data_dir: &str) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => {
            serde_json::Value::String(s.replace("${data_dir}", data_dir))
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(|v| substitute(v, data_dir)).collect())
        }
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, substitute(v, data_dir)))
                .collect(),
        ),
        other => other,
    }
}

/// The devices of a (validated) config. Plugin paths are resolved against `config_dir`;
/// `${data_dir}` in string options becomes the data directory.
pub fn device_specs(config: &Config, config_dir: &Path, data_dir: &Path) -> Vec<DeviceSpec> {
    let data_dir = data_dir.display().to_string();
    config
        .devices
        .iter()
        .filter_map(|d| {
            Some(DeviceSpec {
                id: d.id.get_ref().clone(),
                role: parse_role(d.role.get_ref())?,
                desks: d.desks.iter().map(|s| s.get_ref().clone()).collect(),
                terminal: d.terminal.as_ref().map(|t| t.get_ref().clone()),
                departments: d.departments.iter().map(|s| s.get_ref().clone()).collect(),
                plugin_path: resolve_plugin(d.plugin.get_ref(), &config.plugins.dirs, config_dir),
                options: substitute(
                    serde_json::to_value(&d.options).unwrap_or(serde_json::Value::Null),
                    &data_dir,
                ),
            })
        })
        .collect()
}

/// Checks a device as `leitsystemd plugins` does: load and role, then (with `create`: no
/// daemon holds the devices) create and destroy it.
pub fn probe_device(spec: &DeviceSpec, create: bool) -> Result<LoadedPlugin, PluginError> {
    let plugin = load_plugin(&spec.plugin_path)?;
    check_role(&plugin, spec)?;
    if !create {
        return Ok(plugin);
    }
    let (tx, _rx) = mpsc::channel(EMIT_QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    match Instance::create(&plugin, spec, &tx, &dropped) {
        Ok(instance) => {
            drop(instance);
            Ok(plugin)
        }
        Err((_, reason)) => Err(PluginError::CreateFailed {
            path: spec.plugin_path.display().to_string(),
            plugin: plugin.name,
            device: spec.id.clone(),
            reason,
        }),
    }
}

pub(crate) fn check_role(plugin: &LoadedPlugin, spec: &DeviceSpec) -> Result<(), PluginError> {
    if plugin.roles.iter().any(|r| r == spec.role.as_str()) {
        Ok(())
    } else {
        Err(PluginError::RoleUnsupported {
            path: spec.plugin_path.display().to_string(),
            plugin: plugin.name.clone(),
            role: spec.role.as_str().to_string(),
            roles: plugin.roles.join(", "),
        })
    }
}
