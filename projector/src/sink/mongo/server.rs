//! Which server answers at a MongoDB URI: MongoDB itself, or FerretDB (the MongoDB protocol over
//! PostgreSQL, the native stack's store). The sink writes the same commands to both; this names
//! the server for the benchmark harness (which sizes its Mongo workload by it) and for the
//! tests that pin the server differences the sink works around (`tests/tests/mongo_servers.rs`).

use std::fmt;

use mongodb::bson::{Document, doc};
use mongodb::{Client, error::Error};

/// The server behind a MongoDB connection, from its `buildInfo` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MongoServer {
    /// MongoDB (`mongod` or `mongos`).
    MongoDb {
        /// Its version (`7.0.14`).
        version: String,
    },
    /// FerretDB.
    FerretDb {
        /// FerretDB's own version (`unknown` in a build without version stamps, as the local
        /// stack's `go build`).
        version: String,
        /// The MongoDB version it answers as.
        compatible_with: String,
    },
}

impl MongoServer {
    /// The server named by a `buildInfo` reply: FerretDB adds `ferretdbVersion` next to the
    /// MongoDB version it answers as.
    pub fn from_build_info(info: &Document) -> Self {
        let version = info.get_str("version").unwrap_or("unknown").to_owned();
        match info.get_str("ferretdbVersion") {
            Ok(ferret) => MongoServer::FerretDb {
                version: ferret.to_owned(),
                compatible_with: version,
            },
            Err(_) => MongoServer::MongoDb { version },
        }
    }

    /// Asks the server behind `client` (`buildInfo` on `admin`).
    pub async fn detect(client: &Client) -> Result<Self, Error> {
        let info = client
            .database("admin")
            .run_command(doc! {"buildInfo": 1})
            .await?;
        Ok(Self::from_build_info(&info))
    }

    /// Whether this is FerretDB.
    pub fn is_ferretdb(&self) -> bool {
        matches!(self, MongoServer::FerretDb { .. })
    }
}

impl fmt::Display for MongoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MongoServer::MongoDb { version } => write!(f, "MongoDB {version}"),
            MongoServer::FerretDb {
                version,
                compatible_with,
            } => write!(f, "FerretDB {version} (as MongoDB {compatible_with})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_info_with_a_ferretdb_version_is_ferretdb_and_one_without_is_mongodb() {
        // As FerretDB v1.24 answers (built with `go install`, so its own version is unknown).
        let ferret = doc! {"version": "7.0.42", "ferretdbVersion": "unknown", "ok": 1.0};
        let server = MongoServer::from_build_info(&ferret);
        assert_eq!(
            server,
            MongoServer::FerretDb {
                version: "unknown".into(),
                compatible_with: "7.0.42".into()
            }
        );
        assert!(server.is_ferretdb());
        assert_eq!(server.to_string(), "FerretDB unknown (as MongoDB 7.0.42)");
        let mongod = doc! {"version": "7.0.14", "gitVersion": "ce59cfc", "ok": 1.0};
        let server = MongoServer::from_build_info(&mongod);
        assert_eq!(
            server,
            MongoServer::MongoDb {
                version: "7.0.14".into()
            }
        );
        assert!(!server.is_ferretdb());
        assert_eq!(server.to_string(), "MongoDB 7.0.14");
    }
}
