//! The server differences the Mongo code works around, pinned per server. The sink, the reads
//! and `xclog rebuild --target mongo` send the same commands to MongoDB and to FerretDB 1.24
//! (the native stack's store); where FerretDB behaves differently the code keeps to what both
//! do, and says so at the spot. Each difference has one test per server: it asks the server
//! who it is (`buildInfo`), prints it, and asserts what that server does. A test for the other
//! server prints why it is skipped: the FerretDB tests run on the native stack (`make test`),
//! the MongoDB ones on the test containers (`make test-docker`: MongoDB 7, a replica set).
//! If a FerretDB release stops having a quirk, its test fails here and the workaround can go.

use mongodb::bson::{Document, doc};
use xclog_projector::sink::mongo::server::MongoServer;
use xclog_tests::TestMongo;

/// Which server a test is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum For {
    FerretDb,
    MongoDb,
}

/// The test's database when the services' Mongo server is `server`; otherwise prints why the
/// test is skipped and gives `None`. Either way it prints which server answered.
async fn on(server: For, test: &str) -> anyhow::Result<Option<TestMongo>> {
    let m = TestMongo::create().await?;
    let found = m.server().await?;
    let matches = match server {
        For::FerretDb => found.is_ferretdb(),
        For::MongoDb => matches!(found, MongoServer::MongoDb { .. }),
    };
    if matches {
        eprintln!("{test}: ran on {found}");
        Ok(Some(m))
    } else {
        eprintln!(
            "SKIPPED {test}: it is for {} and this binary's Mongo server is {found} \
             (FerretDB: make test, the native stack; MongoDB: make test-docker)",
            match server {
                For::FerretDb => "FerretDB",
                For::MongoDb => "MongoDB",
            }
        );
        Ok(None)
    }
}

/// Asserts that FerretDB refused an operation with an error that contains `expected`; `if_not`
/// says what it would mean if it had not.
fn assert_refused<T: std::fmt::Debug>(
    result: mongodb::error::Result<T>,
    expected: &str,
    if_not: &str,
) {
    let error = result.expect_err(if_not).to_string();
    assert!(error.contains(expected), "{error}");
}

/// Stores `{_id: 1, v: 5}`, then sends one unordered `update` of two upserts: the first fails
/// (its filter misses the stored document, so it inserts `_id: 1` again: duplicate key), the
/// second upserts `_id: 2`. Returns whether `_id: 2` was stored. The snapshot step decides
/// per instance from what is stored so that no statement of such a command fails
/// (`sink/mongo.rs`, "Snapshots").
async fn second_upsert_applied_after_a_failed_first(m: &TestMongo) -> anyhow::Result<bool> {
    let db = m.database();
    let c = db.collection::<Document>("t");
    c.insert_one(doc! {"_id": 1, "v": 5}).await?;
    let reply = db
        .run_command(doc! {
            "update": "t",
            "ordered": false,
            "updates": [
                {"q": {"_id": 1, "v": {"$gt": 9}}, "u": {"$set": {"v": 10}}, "upsert": true},
                {"q": {"_id": 2}, "u": {"$set": {"v": 1}}, "upsert": true},
            ],
        })
        .await;
    // MongoDB answers ok with `writeErrors`; either way the first statement must have failed.
    let failed_first = match &reply {
        Ok(r) => r
            .get_array("writeErrors")
            .is_ok_and(|errors| !errors.is_empty()),
        Err(_) => true,
    };
    anyhow::ensure!(
        failed_first,
        "the first upsert was expected to fail with a duplicate key: {reply:?}"
    );
    Ok(c.find_one(doc! {"_id": 2}).await?.is_some())
}

#[tokio::test]
async fn on_ferretdb_an_unordered_update_ends_at_its_first_failed_statement() -> anyhow::Result<()>
{
    let Some(m) = on(For::FerretDb, "unordered update, FerretDB").await? else {
        return Ok(());
    };
    assert!(
        !second_upsert_applied_after_a_failed_first(&m).await?,
        "FerretDB applied a statement after a failed one: the snapshot step's per-instance decision may no longer be needed"
    );
    Ok(())
}

#[tokio::test]
async fn on_mongodb_an_unordered_update_goes_on_past_a_failed_statement() -> anyhow::Result<()> {
    let Some(m) = on(For::MongoDb, "unordered update, MongoDB").await? else {
        return Ok(());
    };
    assert!(second_upsert_applied_after_a_failed_first(&m).await?);
    Ok(())
}

/// Renames collection `from` to `to` in the test's database (`renameCollection` runs on
/// `admin` with full names).
async fn rename(m: &TestMongo, from: &str, to_db: &str, to: &str) -> mongodb::error::Result<()> {
    m.database()
        .collection::<Document>(from)
        .insert_one(doc! {"_id": 1})
        .await?;
    m.client
        .database("admin")
        .run_command(doc! {
            "renameCollection": format!("{}.{from}", m.name),
            "to": format!("{to_db}.{to}"),
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn on_ferretdb_rename_refuses_a_collection_name_with_a_dot() -> anyhow::Result<()> {
    let Some(m) = on(For::FerretDb, "rename to a dotted name, FerretDB").await? else {
        return Ok(());
    };
    assert_refused(
        rename(&m, "a", &m.name, "xclog_rebuild.events").await,
        "Invalid target namespace",
        "FerretDB renamed to a dotted name: the shadow prefix may use '.' again",
    );
    Ok(())
}

#[tokio::test]
async fn on_mongodb_rename_takes_a_collection_name_with_a_dot() -> anyhow::Result<()> {
    let Some(m) = on(For::MongoDb, "rename to a dotted name, MongoDB").await? else {
        return Ok(());
    };
    rename(&m, "a", &m.name, "xclog_rebuild.events").await?;
    let names = m.database().list_collection_names().await?;
    assert!(
        names.contains(&"xclog_rebuild.events".to_owned()),
        "{names:?}"
    );
    Ok(())
}

#[tokio::test]
async fn on_ferretdb_rename_stays_within_one_database() -> anyhow::Result<()> {
    let Some(m) = on(For::FerretDb, "rename across databases, FerretDB").await? else {
        return Ok(());
    };
    let other = TestMongo::create().await?;
    assert_refused(
        rename(&m, "a", &other.name, "a").await,
        "cross-database rename",
        "FerretDB renamed across databases: the rebuild's shadow could live in its own database",
    );
    Ok(())
}

#[tokio::test]
async fn on_mongodb_rename_moves_a_collection_to_another_database() -> anyhow::Result<()> {
    let Some(m) = on(For::MongoDb, "rename across databases, MongoDB").await? else {
        return Ok(());
    };
    let other = TestMongo::create().await?;
    rename(&m, "a", &other.name, "a").await?;
    let moved = other
        .database()
        .collection::<Document>("a")
        .count_documents(doc! {})
        .await?;
    assert_eq!(moved, 1);
    Ok(())
}

async fn store_nested_array(m: &TestMongo) -> mongodb::error::Result<()> {
    m.database()
        .collection::<Document>("t")
        .insert_one(doc! {"_id": 1, "a": [[1, 2], [3]]})
        .await?;
    Ok(())
}

#[tokio::test]
async fn on_ferretdb_a_nested_array_is_refused() -> anyhow::Result<()> {
    let Some(m) = on(For::FerretDb, "nested array, FerretDB").await? else {
        return Ok(());
    };
    assert_refused(
        store_nested_array(&m).await,
        "nested arrays are not supported",
        "FerretDB stored a nested array: the %arr wrapper may no longer be needed",
    );
    Ok(())
}

#[tokio::test]
async fn on_mongodb_a_nested_array_is_stored() -> anyhow::Result<()> {
    let Some(m) = on(For::MongoDb, "nested array, MongoDB").await? else {
        return Ok(());
    };
    store_nested_array(&m).await?;
    Ok(())
}

/// Inserts one document in a multi-document transaction and commits it.
async fn insert_in_a_transaction(m: &TestMongo) -> mongodb::error::Result<()> {
    let c = m.database().collection::<Document>("t");
    // A transaction cannot create a collection on MongoDB before 4.4 and FerretDB refuses
    // transactions anyway: create it first so only the transaction is tested.
    c.insert_one(doc! {"_id": 0}).await?;
    let mut session = m.client.start_session().await?;
    session.start_transaction().await?;
    c.insert_one(doc! {"_id": 1}).session(&mut session).await?;
    c.insert_one(doc! {"_id": 2}).session(&mut session).await?;
    session.commit_transaction().await?;
    Ok(())
}

#[tokio::test]
async fn on_ferretdb_a_multi_document_transaction_is_refused() -> anyhow::Result<()> {
    let Some(m) = on(For::FerretDb, "transaction, FerretDB").await? else {
        return Ok(());
    };
    // FerretDB 1.24 does not know the transaction fields of a command.
    assert_refused(
        insert_in_a_transaction(&m).await,
        "startTransaction",
        "FerretDB committed a multi-document transaction",
    );
    Ok(())
}

#[tokio::test]
async fn on_mongodb_a_multi_document_transaction_commits_on_the_replica_set() -> anyhow::Result<()>
{
    let Some(m) = on(For::MongoDb, "transaction, MongoDB").await? else {
        return Ok(());
    };
    insert_in_a_transaction(&m).await?;
    let stored = m
        .database()
        .collection::<Document>("t")
        .count_documents(doc! {})
        .await?;
    assert_eq!(stored, 3);
    Ok(())
}

/// Stores `{_id: 1, caused: ["a", "b", "c"]}`, sends `$pull: {caused: {$in: ["a", "b"]}}` and
/// returns what is left (the sink removes wrong links with `$pullAll` instead).
async fn pull_with_in(m: &TestMongo) -> anyhow::Result<Vec<String>> {
    let c = m.database().collection::<Document>("t");
    c.insert_one(doc! {"_id": 1, "caused": ["a", "b", "c"]})
        .await?;
    c.update_one(
        doc! {"_id": 1},
        doc! {"$pull": {"caused": {"$in": ["a", "b"]}}},
    )
    .await?;
    let stored = c
        .find_one(doc! {"_id": 1})
        .await?
        .ok_or_else(|| anyhow::anyhow!("the document is gone"))?;
    Ok(stored
        .get_array("caused")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

#[tokio::test]
async fn on_ferretdb_pull_with_in_removes_nothing() -> anyhow::Result<()> {
    let Some(m) = on(For::FerretDb, "$pull with $in, FerretDB").await? else {
        return Ok(());
    };
    assert_eq!(
        pull_with_in(&m).await?,
        ["a", "b", "c"],
        "FerretDB's $pull with $in removed elements: $pullAll may no longer be needed"
    );
    Ok(())
}

#[tokio::test]
async fn on_mongodb_pull_with_in_removes_the_listed_elements() -> anyhow::Result<()> {
    let Some(m) = on(For::MongoDb, "$pull with $in, MongoDB").await? else {
        return Ok(());
    };
    assert_eq!(pull_with_in(&m).await?, ["c"]);
    Ok(())
}
