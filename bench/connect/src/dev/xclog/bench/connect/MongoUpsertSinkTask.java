package dev.xclog.bench.connect;

import com.mongodb.MongoException;
import com.mongodb.client.MongoClient;
import com.mongodb.client.MongoClients;
import com.mongodb.client.MongoCollection;
import com.mongodb.client.model.BulkWriteOptions;
import com.mongodb.client.model.Filters;
import com.mongodb.client.model.Indexes;
import com.mongodb.client.model.ReplaceOneModel;
import com.mongodb.client.model.ReplaceOptions;
import com.mongodb.client.model.WriteModel;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.bson.BsonDocument;

/** Task of {@link MongoUpsertSinkConnector}. */
public class MongoUpsertSinkTask extends SinkTask {
    private static final ReplaceOptions UPSERT = new ReplaceOptions().upsert(true);

    private MongoClient client;
    private MongoCollection<BsonDocument> collection;
    private BulkWriteOptions options;

    @Override public String version() { return "1"; }

    @Override public void start(Map<String, String> props) {
        client = MongoClients.create(props.get("connection.uri"));
        collection = client.getDatabase(props.get("database"))
            .getCollection(props.get("collection"), BsonDocument.class);
        options = new BulkWriteOptions()
            .ordered(Boolean.parseBoolean(props.getOrDefault("bulk.write.ordered", "true")));
        // The indexes of the xcomponent-ai store, as a user of the sink would create them.
        for (String field : new String[] {"instanceId", "componentName", "machineName", "persistedAt", "causedBy"}) {
            collection.createIndex(Indexes.ascending(field));
        }
    }

    @Override public void put(Collection<SinkRecord> records) {
        if (records.isEmpty()) return;
        List<WriteModel<BsonDocument>> models = new ArrayList<>(records.size());
        for (SinkRecord record : records) {
            BsonDocument doc = BsonDocument.parse((String) record.value());
            models.add(new ReplaceOneModel<>(Filters.eq("_id", doc.get("_id")), doc, UPSERT));
        }
        try {
            collection.bulkWrite(models, options);
        } catch (MongoException e) {
            throw new RetriableException("writing " + records.size() + " documents", e);
        }
    }

    @Override public void stop() {
        if (client != null) client.close();
    }
}
