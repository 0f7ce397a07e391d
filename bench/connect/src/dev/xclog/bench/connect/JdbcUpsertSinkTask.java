package dev.xclog.bench.connect;

import java.sql.Array;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.sql.Types;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;

/** Task of {@link JdbcUpsertSinkConnector}. */
public class JdbcUpsertSinkTask extends SinkTask {
    private static final String SQL =
        "INSERT INTO fsm_events (id, instance_id, machine_name, component_name, event_type, "
        + "event_payload, state_before, state_after, persisted_at, caused_by, "
        + "source_component_name, target_component_name, sequence, event_timestamp, "
        + "public_member_snapshot) VALUES (?, ?, ?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?, ?, ?, ?, ?::jsonb) "
        + "ON CONFLICT (id) DO UPDATE SET instance_id = EXCLUDED.instance_id, "
        + "machine_name = EXCLUDED.machine_name, component_name = EXCLUDED.component_name, "
        + "event_type = EXCLUDED.event_type, event_payload = EXCLUDED.event_payload, "
        + "state_before = EXCLUDED.state_before, state_after = EXCLUDED.state_after, "
        + "persisted_at = EXCLUDED.persisted_at, caused_by = EXCLUDED.caused_by, "
        + "source_component_name = EXCLUDED.source_component_name, "
        + "target_component_name = EXCLUDED.target_component_name, sequence = EXCLUDED.sequence, "
        + "event_timestamp = EXCLUDED.event_timestamp, "
        + "public_member_snapshot = EXCLUDED.public_member_snapshot";

    private Connection connection;
    private PreparedStatement upsert;
    private int batchSize;

    @Override public String version() { return "1"; }

    @Override public void start(Map<String, String> props) {
        batchSize = Integer.parseInt(props.getOrDefault("batch.size", "500"));
        try {
            // The driver is in the plugin's class loader, which DriverManager does not search.
            Properties credentials = new Properties();
            credentials.setProperty("user", props.get("connection.username"));
            credentials.setProperty("password", props.get("connection.password"));
            connection = new org.postgresql.Driver().connect(props.get("connection.url"), credentials);
            connection.setAutoCommit(false);
            upsert = connection.prepareStatement(SQL);
        } catch (SQLException e) {
            throw new ConnectException("connecting to " + props.get("connection.url"), e);
        }
    }

    @Override public void put(Collection<SinkRecord> records) {
        if (records.isEmpty()) return;
        try {
            int pending = 0;
            for (SinkRecord record : records) {
                bind((Struct) record.value());
                upsert.addBatch();
                if (++pending == batchSize) {
                    upsert.executeBatch();
                    pending = 0;
                }
            }
            if (pending > 0) upsert.executeBatch();
            connection.commit();
        } catch (SQLException e) {
            try { connection.rollback(); } catch (SQLException ignored) { }
            throw new RetriableException("writing " + records.size() + " rows", e);
        }
    }

    private void bind(Struct v) throws SQLException {
        upsert.setString(1, v.getString("id"));
        upsert.setString(2, v.getString("instance_id"));
        upsert.setString(3, v.getString("machine_name"));
        upsert.setString(4, v.getString("component_name"));
        upsert.setString(5, v.getString("event_type"));
        upsert.setString(6, v.getString("event_payload"));
        upsert.setString(7, v.getString("state_before"));
        upsert.setString(8, v.getString("state_after"));
        upsert.setLong(9, v.getInt64("persisted_at"));
        List<Object> causedBy = v.getArray("caused_by");
        if (causedBy == null) {
            upsert.setNull(10, Types.ARRAY);
        } else {
            Array array = connection.createArrayOf("text", causedBy.toArray());
            upsert.setArray(10, array);
        }
        upsert.setString(11, v.getString("source_component_name"));
        upsert.setString(12, v.getString("target_component_name"));
        setLong(13, v.getInt64("sequence"));
        setLong(14, v.getInt64("event_timestamp"));
        upsert.setString(15, v.getString("public_member_snapshot"));
    }

    private void setLong(int index, Long value) throws SQLException {
        if (value == null) upsert.setNull(index, Types.BIGINT); else upsert.setLong(index, value);
    }

    @Override public void stop() {
        try { if (connection != null) connection.close(); } catch (SQLException ignored) { }
    }
}
