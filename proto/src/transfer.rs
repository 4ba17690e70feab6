//! Conversions for `Stat`, `Push` and `Fetch`: between the prost messages and
//! `volley_common::transfer`'s plain types. Empty strings on the wire mean "none".

use volley_common::transfer::{
    FetchEvent, FetchSpec, FileFacts, FileState, Owner, PushSpec, Pushed, StatQuery,
};

use crate::{ProtoError, pb};

fn none_if_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl From<StatQuery> for pb::StatQuery {
    fn from(query: StatQuery) -> pb::StatQuery {
        pb::StatQuery {
            path: query.path,
            size: query.size,
            follow_links: query.follow_links,
        }
    }
}

impl From<pb::StatQuery> for StatQuery {
    fn from(query: pb::StatQuery) -> StatQuery {
        StatQuery {
            path: query.path,
            size: query.size,
            follow_links: query.follow_links,
        }
    }
}

impl From<FileState> for pb::PathState {
    fn from(state: FileState) -> pb::PathState {
        use pb::path_state::State;
        let state = match state {
            FileState::Missing => State::Missing(pb::Absent {}),
            FileState::File(facts) => State::File(pb::RegularFile {
                sha256: facts.sha256.unwrap_or_default(),
                size: facts.size,
                mode: facts.mode,
                uid: facts.uid,
                gid: facts.gid,
                user: facts.user,
                group: facts.group,
            }),
            FileState::Other { kind } => State::Other(kind),
        };
        pb::PathState { state: Some(state) }
    }
}

impl TryFrom<pb::PathState> for FileState {
    type Error = ProtoError;

    fn try_from(state: pb::PathState) -> Result<FileState, ProtoError> {
        use pb::path_state::State;
        Ok(
            match state.state.ok_or(ProtoError::Missing {
                message: "PathState",
                field: "state",
            })? {
                State::Missing(_) => FileState::Missing,
                State::File(file) => FileState::File(FileFacts {
                    sha256: none_if_empty(file.sha256),
                    size: file.size,
                    mode: file.mode,
                    uid: file.uid,
                    gid: file.gid,
                    user: file.user,
                    group: file.group,
                }),
                State::Other(kind) => FileState::Other { kind },
            },
        )
    }
}

impl From<PushSpec> for pb::PushHeader {
    fn from(spec: PushSpec) -> pb::PushHeader {
        pb::PushHeader {
            execution_id: spec.execution_id,
            path: spec.path,
            size: spec.size,
            sha256: spec.sha256,
            mode: spec.mode,
            user: spec.owner.user.unwrap_or_default(),
            group: spec.owner.group.unwrap_or_default(),
            create_below: spec.create_below.unwrap_or_default(),
            backup_suffix: spec.backup_suffix.unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::PushHeader> for PushSpec {
    type Error = ProtoError;

    fn try_from(header: pb::PushHeader) -> Result<PushSpec, ProtoError> {
        let invalid = |field, reason: &str| ProtoError::Invalid {
            message: "PushHeader",
            field,
            reason: reason.to_string(),
        };
        if header.path.is_empty() {
            return Err(ProtoError::Missing {
                message: "PushHeader",
                field: "path",
            });
        }
        let hex = header.sha256.len() == 64
            && header
                .sha256
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if !hex {
            return Err(invalid("sha256", "not 64 lower-case hex digits"));
        }
        if header.mode > 0o7777 {
            return Err(invalid("mode", "more than permission bits"));
        }
        if header.backup_suffix.contains('/') {
            return Err(invalid("backup_suffix", "holds a '/'"));
        }
        Ok(PushSpec {
            execution_id: header.execution_id,
            path: header.path,
            size: header.size,
            sha256: header.sha256,
            mode: header.mode,
            owner: Owner {
                user: none_if_empty(header.user),
                group: none_if_empty(header.group),
            },
            create_below: none_if_empty(header.create_below),
            backup_suffix: none_if_empty(header.backup_suffix),
        })
    }
}

impl From<Pushed> for pb::PushResult {
    fn from(pushed: Pushed) -> pb::PushResult {
        pb::PushResult {
            backup: pushed.backup.unwrap_or_default(),
        }
    }
}

impl From<pb::PushResult> for Pushed {
    fn from(result: pb::PushResult) -> Pushed {
        Pushed {
            backup: none_if_empty(result.backup),
        }
    }
}

impl From<FetchSpec> for pb::FetchRequest {
    fn from(spec: FetchSpec) -> pb::FetchRequest {
        pb::FetchRequest {
            execution_id: spec.execution_id,
            path: spec.path,
        }
    }
}

impl From<pb::FetchRequest> for FetchSpec {
    fn from(request: pb::FetchRequest) -> FetchSpec {
        FetchSpec {
            execution_id: request.execution_id,
            path: request.path,
        }
    }
}

impl From<FetchEvent> for pb::FetchChunk {
    fn from(event: FetchEvent) -> pb::FetchChunk {
        use pb::fetch_chunk::Part;
        let part = match event {
            FetchEvent::Started { size, mode } => Part::Header(pb::FetchHeader { size, mode }),
            FetchEvent::Data(data) => Part::Data(data),
            FetchEvent::Ended { sha256, size } => Part::Trailer(pb::FetchTrailer { sha256, size }),
        };
        pb::FetchChunk { part: Some(part) }
    }
}

impl TryFrom<pb::FetchChunk> for FetchEvent {
    type Error = ProtoError;

    fn try_from(chunk: pb::FetchChunk) -> Result<FetchEvent, ProtoError> {
        use pb::fetch_chunk::Part;
        Ok(
            match chunk.part.ok_or(ProtoError::Missing {
                message: "FetchChunk",
                field: "part",
            })? {
                Part::Header(header) => FetchEvent::Started {
                    size: header.size,
                    mode: header.mode,
                },
                Part::Data(data) => FetchEvent::Data(data),
                Part::Trailer(trailer) => FetchEvent::Ended {
                    sha256: trailer.sha256,
                    size: trailer.size,
                },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PushSpec {
        PushSpec {
            execution_id: "run-1/h01".to_string(),
            path: "/etc/nginx/nginx.conf".to_string(),
            size: 12,
            sha256: "a".repeat(64),
            mode: 0o640,
            owner: Owner {
                user: Some("www-data".to_string()),
                group: None,
            },
            create_below: Some("/etc/nginx".to_string()),
            backup_suffix: None,
        }
    }

    #[test]
    fn push_headers_round_trip() {
        let wire = pb::PushHeader::from(spec());
        assert_eq!(wire.group, "");
        assert_eq!(PushSpec::try_from(wire), Ok(spec()));
    }

    #[test]
    fn bad_push_headers_are_refused() {
        let check = |change: fn(&mut pb::PushHeader), field: &str| {
            let mut wire = pb::PushHeader::from(spec());
            change(&mut wire);
            let error = PushSpec::try_from(wire).unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        };
        check(|h| h.path.clear(), "path");
        check(|h| h.sha256 = "A".repeat(64), "sha256");
        check(|h| h.sha256 = "abc".to_string(), "sha256");
        check(|h| h.mode = 0o10000, "mode");
        check(|h| h.backup_suffix = "/x".to_string(), "backup_suffix");
    }

    #[test]
    fn states_and_fetch_events_round_trip() {
        for state in [
            FileState::Missing,
            FileState::Other {
                kind: "directory".to_string(),
            },
            FileState::File(FileFacts {
                sha256: None,
                size: 3,
                mode: 0o644,
                uid: 0,
                gid: 33,
                user: "root".to_string(),
                group: "www-data".to_string(),
            }),
        ] {
            assert_eq!(
                FileState::try_from(pb::PathState::from(state.clone())),
                Ok(state)
            );
        }
        for event in [
            FetchEvent::Started {
                size: 3,
                mode: 0o600,
            },
            FetchEvent::Data(b"abc".to_vec()),
            FetchEvent::Ended {
                sha256: "b".repeat(64),
                size: 3,
            },
        ] {
            assert_eq!(
                FetchEvent::try_from(pb::FetchChunk::from(event.clone())),
                Ok(event)
            );
        }
        assert!(FileState::try_from(pb::PathState { state: None }).is_err());
    }
}
