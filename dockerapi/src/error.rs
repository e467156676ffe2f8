//! Errors as dockerd answers them: a status code and `{"message": "…"}`.

use http::StatusCode;
use tonic::Code;

/// dockerd's 503 on a worker (swarmkit's wording, which Shoal's managers
/// already use for the same refusal).
pub const WORKER_MESSAGE: &str = "This node is not a swarm manager. Worker nodes can't be used to \
     view or modify cluster state. Please run this command on a manager node or promote the \
     current node to a manager.";

/// dockerd's 503 on a node that is in no swarm.
pub const INACTIVE_MESSAGE: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \
     \"docker swarm join\" to connect this node to swarm and try again.";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field or query parameter Shoal cannot take as given.
    #[error("{field}: {reason}")]
    BadParameter { field: String, reason: String },
    /// The body is not the JSON the endpoint reads.
    #[error("invalid JSON: {source}")]
    InvalidJson {
        #[source]
        source: serde_json::Error,
    },
    /// A field docker has and Shoal does not, given a non-default value:
    /// refused rather than dropped.
    #[error("{field}: not supported by Shoal; remove it or leave it at its default")]
    Unsupported { field: String },
    /// The managers refused the request's content (their message names
    /// the field).
    #[error("{0}")]
    Invalid(String),
    #[error("invalid filter '{0}'")]
    InvalidFilter(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(String),
    /// A manager-only endpoint on a worker (`inactive: false`) or on a node
    /// in no swarm.
    #[error("{}", if *inactive { INACTIVE_MESSAGE } else { WORKER_MESSAGE })]
    NotManager { inactive: bool },
    #[error("{0}")]
    Unavailable(String),
    /// Anything else the managers refused; dockerd's catch-all 500 (also
    /// its answer to a stale `version`: "update out of sequence").
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("page not found")]
    NoRoute,
    #[error("client version {given} is too new. Maximum supported API version is {max}")]
    VersionTooNew { given: String, max: &'static str },
    #[error(
        "client version {given} is too old. Minimum supported API version is {min}, please \
         upgrade your client to a newer version"
    )]
    VersionTooOld { given: String, min: &'static str },
    /// The node's own daemon could not be reached over its socket.
    #[error("shoald is not answering on its socket: {0}")]
    Daemon(String),
}

impl ApiError {
    pub fn bad(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::BadParameter {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. }
            | ApiError::InvalidJson { .. }
            | ApiError::Invalid(_)
            | ApiError::Unsupported { .. }
            | ApiError::InvalidFilter(_)
            | ApiError::VersionTooNew { .. }
            | ApiError::VersionTooOld { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotManager { .. } | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) | ApiError::Daemon(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// dockerd's body: `{"message":"…"}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.to_string() }).to_string()
    }

    /// The 503 a manager-only call got, as dockerd words it.
    pub fn is_not_manager(&self) -> bool {
        matches!(self, ApiError::NotManager { .. })
    }
}

impl From<tonic::Status> for ApiError {
    /// dockerd's mapping of swarmkit's gRPC codes (moby's
    /// `statusCodeFromGRPCError`), with the two answers Shoal words as
    /// failed preconditions where swarmkit has their own codes.
    fn from(s: tonic::Status) -> Self {
        let message = s.message().to_owned();
        if message.starts_with("This node is not a swarm manager") {
            return ApiError::NotManager { inactive: false };
        }
        if message.starts_with("update out of sequence") {
            return ApiError::Internal(message);
        }
        // Shoal's managers refuse a taken name as a failed precondition
        // (`ApplyError::NameConflict`); swarmkit says AlreadyExists, which
        // dockerd answers with 409.
        if s.code() == Code::FailedPrecondition
            && message.contains(" name \"")
            && message.contains("\" is already used by ")
        {
            return ApiError::Conflict(message);
        }
        // A status made by the client's transport (the daemon went away)
        // carries its cause; the daemon's own answers never do.
        if std::error::Error::source(&s).is_some() {
            return ApiError::Daemon(message);
        }
        match s.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                ApiError::Invalid(message)
            }
            Code::NotFound => ApiError::NotFound(message),
            Code::AlreadyExists => ApiError::Conflict(message),
            Code::PermissionDenied => ApiError::Forbidden(message),
            Code::Unauthenticated => ApiError::Unauthorized(message),
            Code::Unimplemented => ApiError::NotImplemented(message),
            Code::Unavailable => ApiError::Unavailable(message),
            _ => ApiError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_as_dockerd_maps_them() {
        let cases = [
            (tonic::Status::not_found("service web not found"), 404),
            (tonic::Status::already_exists("name conflicts"), 409),
            (tonic::Status::invalid_argument("bad"), 400),
            (tonic::Status::failed_precondition("in use"), 400),
            (tonic::Status::permission_denied("no"), 403),
            (tonic::Status::unavailable("no leader"), 503),
            (tonic::Status::internal("boom"), 500),
            (tonic::Status::unimplemented("x"), 501),
            (
                tonic::Status::failed_precondition(
                    "update out of sequence: service web is at version 9, not 3",
                ),
                500,
            ),
            (tonic::Status::failed_precondition(WORKER_MESSAGE), 503),
            (
                tonic::Status::failed_precondition(
                    "service name \"web\" is already used by service 504bcowts9x58",
                ),
                409,
            ),
        ];
        for (status, code) in cases {
            let e = ApiError::from(status.clone());
            assert_eq!(e.status().as_u16(), code, "{status:?}");
            // The manager's words pass through unchanged.
            let body: serde_json::Value =
                serde_json::from_str(&e.body()).unwrap_or(serde_json::Value::Null);
            assert_eq!(body["message"], status.message(), "{status:?}");
        }
    }

    #[test]
    fn the_two_503s_read_as_dockerd_s() {
        let worker = ApiError::NotManager { inactive: false }.to_string();
        assert!(worker.contains("Worker nodes can't be used"), "{worker}");
        let inactive = ApiError::NotManager { inactive: true }.to_string();
        assert!(inactive.contains("\"docker swarm init\""), "{inactive}");
    }

    #[test]
    fn a_lost_daemon_is_not_the_daemon_s_answer() {
        let lost = tonic::Status::from_error(Box::new(std::io::Error::other("broken pipe")));
        assert!(matches!(ApiError::from(lost), ApiError::Daemon(_)));
    }
}
