use super::*;

fn exited(status: ExitStatus) -> Exited {
    Exited {
        status,
        duration: Duration::from_millis(1234),
        timed_out: true,
        stdout_bytes: 10,
        stderr_bytes: 20,
        stdout_truncated: false,
        stderr_truncated: true,
        cancelled: true,
    }
}

#[test]
fn events_round_trip() {
    for event in [
        ExecEvent::Started { pid: 42 },
        ExecEvent::Stdout(b"out".to_vec()),
        ExecEvent::Stderr(b"err".to_vec()),
        ExecEvent::Exited(exited(ExitStatus::Code(3))),
        ExecEvent::Exited(exited(ExitStatus::Signal("KILL".to_string()))),
    ] {
        let wire = pb::ExecEvent::from(event.clone());
        assert_eq!(ExecEvent::try_from(wire), Ok(event));
    }
}

#[test]
fn requests_round_trip() {
    let spec = ExecSpec {
        execution_id: "run-1/h01".to_string(),
        program: Program::Argv(vec!["echo".to_string(), "hi".to_string()]),
        env: [("A".to_string(), "1".to_string())].into(),
        working_dir: Some("/tmp".to_string()),
        timeout: Some(Duration::from_secs(5)),
        max_output: Some(1024),
        user: Some("deploy".to_string()),
        become_root: true,
        keep_output: Some(4096),
        stdin: prost::bytes::Bytes::from_static(b"input\0bytes"),
    };
    assert_eq!(
        ExecSpec::try_from(pb::ExecRequest::from(spec.clone())),
        Ok(spec)
    );
}

#[test]
fn attach_requests_round_trip_and_need_an_id() {
    let spec = AttachSpec {
        execution_id: "20261127T065812Z-3f9a/h01".to_string(),
        stdout_offset: 10,
        stderr_offset: 3,
    };
    assert_eq!(
        AttachSpec::try_from(pb::AttachRequest::from(spec.clone())),
        Ok(spec)
    );
    assert_eq!(
        AttachSpec::try_from(pb::AttachRequest::default())
            .unwrap_err()
            .to_string(),
        "AttachRequest has no execution_id"
    );
}

#[test]
fn empty_fields_read_as_absent() {
    let request = pb::ExecRequest {
        program: Some(pb::exec_request::Program::Shell("true".to_string())),
        ..Default::default()
    };
    let spec = ExecSpec::try_from(request).unwrap();
    assert_eq!(
        (
            spec.user,
            spec.working_dir,
            spec.max_output,
            spec.become_root
        ),
        (None, None, None, false)
    );
}

#[test]
fn malformed_messages_are_typed_errors() {
    let check = |result: Result<ExecEvent, ProtoError>, expected: &str| {
        assert_eq!(result.unwrap_err().to_string(), expected);
    };
    check(
        ExecEvent::try_from(pb::ExecEvent { event: None }),
        "ExecEvent has no event",
    );
    let no_status = pb::Exited {
        status: None,
        ..Default::default()
    };
    check(
        ExecEvent::try_from(pb::ExecEvent {
            event: Some(pb::exec_event::Event::Exited(no_status)),
        }),
        "Exited has no status",
    );
    let request = pb::ExecRequest {
        program: None,
        ..Default::default()
    };
    assert_eq!(
        ExecSpec::try_from(request).unwrap_err().to_string(),
        "ExecRequest has no program"
    );
    let request = pb::ExecRequest {
        program: Some(pb::exec_request::Program::Shell("  ".to_string())),
        ..Default::default()
    };
    assert_eq!(
        ExecSpec::try_from(request).unwrap_err().to_string(),
        "ExecRequest.program: empty command"
    );
    let info = pb::AgentInfo {
        limits: None,
        ..Default::default()
    };
    assert_eq!(
        AgentInfo::try_from(info).unwrap_err().to_string(),
        "AgentInfo has no limits"
    );
}

#[test]
fn agent_info_round_trips_and_a_pid_of_zero_is_none() {
    for pid in [Some(4242), None] {
        let info = AgentInfo {
            version: "0.1.0".to_string(),
            hostname: "web01".to_string(),
            os: "Linux 6.1.0 x86_64".to_string(),
            uptime: Duration::from_secs(7),
            limits: AgentLimits {
                max_concurrent_execs: 64,
                max_message_bytes: 1 << 20,
                max_concurrent_streams: 128,
                max_timeout: None,
                max_file_bytes: pid.map(|_| 1 << 30),
            },
            pid,
        };
        let wire = pb::AgentInfo::from(info.clone());
        assert_eq!(wire.pid, pid.unwrap_or(0));
        assert_eq!(AgentInfo::try_from(wire), Ok(info));
    }
}
