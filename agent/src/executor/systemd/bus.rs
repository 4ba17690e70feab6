//! The D-Bus calls the systemd executor makes to PID 1, and the names they use.
//!
//! The agent talks to systemd over the system bus, as root, as `systemd-run` does. systemd's
//! private socket (`/run/systemd/private`) would spare the bus daemon, but systemd names itself
//! `org.freedesktop.systemd1` as the sender of its messages there, which is no unique name, and
//! zbus refuses such messages; on the bus, units can also be referenced by the agent's
//! connection (`AddRef`), so that systemd keeps a finished unit, and its exit status, until the
//! agent has read it, and forgets it if the agent dies.

use std::collections::HashMap;

use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant, Variant};

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// `si_code` values of `waitid`, as systemd reports them in `ExecMainCode`.
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

/// How a unit's main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MainExit {
    Code(i32),
    Signal(i32),
}

/// One connection to systemd over the system bus.
#[derive(Clone, Debug)]
pub struct Bus {
    connection: Connection,
}

impl Bus {
    /// Connects to the system bus and subscribes to systemd's signals (systemd sends them on the
    /// bus only while some client is subscribed).
    pub async fn connect() -> zbus::Result<Bus> {
        let bus = Bus {
            connection: Connection::system().await?,
        };
        bus.manager::<()>("Subscribe", &()).await?;
        Ok(bus)
    }

    async fn call<R>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &(impl serde::Serialize + zbus::DynamicType),
    ) -> zbus::Result<R>
    where
        R: for<'d> zbus::wire::DynamicDeserialize<'d>,
    {
        let reply = self
            .connection
            .call_method(Some(DESTINATION), path, Some(interface), method, body)
            .await?;
        reply.body().deserialize()
    }

    async fn manager<R>(
        &self,
        method: &str,
        body: &(impl serde::Serialize + zbus::DynamicType),
    ) -> zbus::Result<R>
    where
        R: for<'d> zbus::wire::DynamicDeserialize<'d>,
    {
        self.call(MANAGER_PATH, MANAGER, method, body).await
    }

    /// Signals about units being started and stopped: `JobRemoved(id, job, unit, result)`.
    pub async fn job_removals(&self) -> zbus::Result<MessageStream> {
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .path(MANAGER_PATH)
            .interface(MANAGER)
            .member("JobRemoved")
            .build()?;
        MessageStream::for_match_rule(rule, &self.connection, None).await
    }

    /// Signals that the unit at `path` changed.
    pub async fn changes(&self, path: &str) -> zbus::Result<MessageStream> {
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .path(path)
            .interface(PROPERTIES)
            .member("PropertiesChanged")
            .build()?;
        MessageStream::for_match_rule(rule, &self.connection, None).await
    }

    /// Starts the transient unit `name` with `properties`; returns its start job.
    pub async fn start_transient_unit(
        &self,
        name: &str,
        properties: Vec<(&str, Variant<'_>)>,
    ) -> zbus::Result<OwnedObjectPath> {
        let auxiliary: Vec<(&str, Vec<(&str, Variant)>)> = Vec::new();
        self.manager("StartTransientUnit", &(name, "fail", properties, auxiliary))
            .await
    }

    /// Sends `signal` to every process of unit `name`.
    pub async fn kill_unit(&self, name: &str, signal: i32) -> zbus::Result<()> {
        self.manager("KillUnit", &(name, "all", signal)).await
    }

    /// How many processes the cgroup of unit `name` holds.
    pub async fn unit_processes(&self, name: &str) -> zbus::Result<usize> {
        let processes: Vec<(String, u32, String)> =
            self.manager("GetUnitProcesses", &(name,)).await?;
        Ok(processes.len())
    }

    /// The pid the main process of the service at `path` had, 0 before it was started.
    pub async fn main_pid(&self, path: &str) -> zbus::Result<u32> {
        let value: OwnedVariant = self
            .call(path, PROPERTIES, "Get", &(SERVICE, "ExecMainPID"))
            .await?;
        u32::try_from(value)
    }

    /// How the main process of the service at `path` ended, if it has.
    pub async fn main_exit(&self, path: &str) -> zbus::Result<Option<MainExit>> {
        let properties: HashMap<String, OwnedVariant> =
            self.call(path, PROPERTIES, "GetAll", &(SERVICE,)).await?;
        let number = |name: &str| -> zbus::Result<i32> {
            let value = properties.get(name).ok_or_else(|| {
                zbus::Error::Failure(format!("the service has no property {name}"))
            })?;
            i32::try_from(value.try_clone()?)
        };
        let status = number("ExecMainStatus")?;
        Ok(match number("ExecMainCode")? {
            CLD_EXITED => Some(MainExit::Code(status)),
            CLD_KILLED | CLD_DUMPED => Some(MainExit::Signal(status)),
            _ => None,
        })
    }

    /// Drops the reference that `AddRef` gave this connection to the unit at `path`.
    pub async fn unref(&self, path: &str) -> zbus::Result<()> {
        self.call(path, UNIT, "Unref", &()).await
    }

    /// The names of the loaded units that match `pattern`.
    pub async fn units_matching(&self, pattern: &str) -> zbus::Result<Vec<String>> {
        type Listed = (
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        );
        let states: Vec<&str> = Vec::new();
        let units: Vec<Listed> = self
            .manager("ListUnitsByPatterns", &(states, vec![pattern]))
            .await?;
        Ok(units.into_iter().map(|unit| unit.0).collect())
    }
}

/// The job path and result of a `JobRemoved` signal.
pub fn job_removed(message: &zbus::Message) -> Option<(OwnedObjectPath, String)> {
    let (_, job, _, result): (u32, OwnedObjectPath, String, String) =
        message.body().deserialize().ok()?;
    Some((job, result))
}

/// Whether `error` says that systemd has no such unit (it ended and was collected).
pub fn is_no_such_unit(error: &zbus::Error) -> bool {
    match error {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.systemd1.NoSuchUnit" | "org.freedesktop.DBus.Error.UnknownObject"
        ),
        _ => false,
    }
}

/// The object path systemd gives unit `name`: every byte that is not a letter, or a digit past
/// the first, as `_` and two hex digits.
pub fn object_path(name: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    for (index, byte) in name.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (index > 0 && byte.is_ascii_digit()) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_escape_as_systemd_does() {
        assert_eq!(
            object_path("volley-exec-run_1.2-77.service"),
            "/org/freedesktop/systemd1/unit/volley_2dexec_2drun_5f1_2e2_2d77_2eservice"
        );
        assert_eq!(
            object_path("1a.service"),
            "/org/freedesktop/systemd1/unit/_31a_2eservice"
        );
    }
}
