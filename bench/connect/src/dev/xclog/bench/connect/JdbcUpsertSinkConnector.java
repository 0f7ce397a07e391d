package dev.xclog.bench.connect;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.sink.SinkConnector;

/**
 * Stand-in for the Debezium JDBC sink connector (not served by the Maven Central reachable
 * here): reads Kafka Connect JSON-with-schema records and upserts them into fsm_events the way
 * Debezium's PostgreSQL dialect does, one prepared INSERT ... ON CONFLICT (id) DO UPDATE per
 * record, sent with JDBC executeBatch in batches of batch.size, one transaction per put().
 */
public class JdbcUpsertSinkConnector extends SinkConnector {
    private Map<String, String> props;

    @Override public void start(Map<String, String> props) { this.props = props; }
    @Override public Class<? extends Task> taskClass() { return JdbcUpsertSinkTask.class; }
    @Override public List<Map<String, String>> taskConfigs(int maxTasks) {
        List<Map<String, String>> configs = new ArrayList<>();
        for (int i = 0; i < maxTasks; i++) configs.add(props);
        return configs;
    }
    @Override public void stop() {}
    @Override public ConfigDef config() {
        return new ConfigDef()
            .define("connection.url", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "JDBC URL")
            .define("connection.username", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "user")
            .define("connection.password", ConfigDef.Type.PASSWORD, ConfigDef.Importance.HIGH, "password")
            .define("batch.size", ConfigDef.Type.INT, 500, ConfigDef.Importance.MEDIUM, "rows per executeBatch");
    }
    @Override public String version() { return "1"; }
}
