package dev.xclog.bench.connect;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.sink.SinkConnector;

/**
 * Stand-in for the MongoDB Kafka sink connector (not served by the Maven Central reachable
 * here), with that connector's default write path: each record's JSON value parsed to a
 * BsonDocument, the id taken from the value (ProvidedInValueStrategy), a ReplaceOne upsert per
 * record (ReplaceOneDefaultStrategy), one bulkWrite per put() (max.batch.size = 0), ordered
 * (bulk.write.ordered = true) unless configured otherwise.
 */
public class MongoUpsertSinkConnector extends SinkConnector {
    private Map<String, String> props;

    @Override public void start(Map<String, String> props) { this.props = props; }
    @Override public Class<? extends Task> taskClass() { return MongoUpsertSinkTask.class; }
    @Override public List<Map<String, String>> taskConfigs(int maxTasks) {
        List<Map<String, String>> configs = new ArrayList<>();
        for (int i = 0; i < maxTasks; i++) configs.add(props);
        return configs;
    }
    @Override public void stop() {}
    @Override public ConfigDef config() {
        return new ConfigDef()
            .define("connection.uri", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "Mongo URI")
            .define("database", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "database")
            .define("collection", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "collection")
            .define("bulk.write.ordered", ConfigDef.Type.BOOLEAN, true, ConfigDef.Importance.MEDIUM, "ordered bulk writes");
    }
    @Override public String version() { return "1"; }
}
