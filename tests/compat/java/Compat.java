// The PostgreSQL JDBC driver through rolegate: compiled and run by
// tests/compat.rs (`cargo test --test compat`). Connection parameters come
// from ROLEGATE_* environment variables; prints one line per check and exits
// non-zero if any check failed.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;

import org.postgresql.PGConnection;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;

public class Compat {
    static final String TABLE = System.getenv("ROLEGATE_TABLE");
    static final List<String> FAILED = new ArrayList<>();

    interface Check {
        void run() throws Exception;
    }

    static void check(String name, Check c) {
        try {
            c.run();
            System.out.println("ok   " + name);
        } catch (Throwable e) {
            FAILED.add(name);
            System.out.println("FAIL " + name + ": " + e);
            e.printStackTrace(System.out);
        }
    }

    static void require(boolean cond, String msg) {
        if (!cond) {
            throw new AssertionError(msg);
        }
    }

    static SQLException expectState(String state, Check c) throws Exception {
        try {
            c.run();
        } catch (SQLException e) {
            require(state.equals(e.getSQLState()),
                    "expected SQLSTATE " + state + ", got " + e.getSQLState() + ": " + e.getMessage());
            return e;
        }
        throw new AssertionError("expected SQLSTATE " + state + ", nothing was raised");
    }

    static Connection connect(String ca, String extra) throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("ROLEGATE_HOST") + ":" + System.getenv("ROLEGATE_PORT")
                + "/" + System.getenv("ROLEGATE_DB") + extra;
        Properties p = new Properties();
        p.setProperty("user", System.getenv("ROLEGATE_USER"));
        p.setProperty("password", System.getenv("ROLEGATE_PASSWORD"));
        // verify-full: chain against the CA, and the address against the certificate.
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", ca);
        p.setProperty("connectTimeout", "30");
        p.setProperty("ApplicationName", "compat-jdbc");
        return DriverManager.getConnection(url, p);
    }

    static long scalar(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            require(rs.next(), "no row from " + sql);
            return rs.getLong(1);
        }
    }

    /**
     * A cancel that arrives before the query runs is ignored by the server,
     * so wait until it is running rather than a fixed delay.
     */
    static void waitUntilRunning(Connection watcher, String query) throws Exception {
        try (PreparedStatement ps = watcher.prepareStatement(
                "select count(*) from pg_stat_activity where state = 'active' and query = ?")) {
            ps.setString(1, query);
            for (int i = 0; i < 1200; i++) {
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) > 0) {
                        return;
                    }
                }
                Thread.sleep(50);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String ca = System.getenv("ROLEGATE_CA");
        Connection conn = connect(ca, "");
        String t = TABLE;

        check("connect: SCRAM over TLS verify-full as the runtime role", () -> {
            try (Statement s = conn.createStatement(); ResultSet rs = s.executeQuery("select current_user")) {
                rs.next();
                require(rs.getString(1).equals(System.getenv("ROLEGATE_RUNTIME_ROLE")), rs.getString(1));
            }
        });

        check("TLS: a certificate from another CA is rejected", () -> {
            try (Connection c = connect(System.getenv("ROLEGATE_WRONG_CA"), "")) {
                throw new AssertionError("connected although the certificate is from another CA");
            } catch (SQLException e) {
                require("08006".equals(e.getSQLState()), "expected 08006, got " + e.getSQLState() + ": " + e);
            }
        });

        check("CRUD with PreparedStatement (text and bytea)", () -> {
            try (PreparedStatement ps = conn.prepareStatement("insert into " + t + " (id, v, b) values (?, ?, ?)")) {
                ps.setInt(1, 1);
                ps.setString(2, "one");
                ps.setBytes(3, new byte[] {0, 1, (byte) 255});
                require(ps.executeUpdate() == 1, "insert");
            }
            try (PreparedStatement ps = conn.prepareStatement("update " + t + " set v = ? where id = ?")) {
                ps.setString(1, "uno");
                ps.setInt(2, 1);
                require(ps.executeUpdate() == 1, "update");
            }
            try (PreparedStatement ps = conn.prepareStatement("select v, b from " + t + " where id = ?")) {
                ps.setInt(1, 1);
                try (ResultSet rs = ps.executeQuery()) {
                    require(rs.next(), "row");
                    require(rs.getString(1).equals("uno"), rs.getString(1));
                    require(Arrays.equals(rs.getBytes(2), new byte[] {0, 1, (byte) 255}), "bytea");
                }
            }
        });

        check("batch insert (executeBatch), delete", () -> {
            try (PreparedStatement ps = conn.prepareStatement("insert into " + t + " (id, v) values (?, ?)")) {
                for (int i = 2; i < 52; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "batch " + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                require(counts.length == 50, "batch counts");
            }
            try (PreparedStatement ps = conn.prepareStatement("delete from " + t + " where id >= ?")) {
                ps.setInt(1, 2);
                require(ps.executeUpdate() == 50, "delete");
            }
        });

        check("server-side prepared statement (prepareThreshold=1), binary transfer", () -> {
            try (PreparedStatement ps = conn.prepareStatement("select v, 1.5::numeric, now() from " + t + " where id = ?")) {
                ps.unwrap(PGStatement.class).setPrepareThreshold(1);
                for (int i = 0; i < 5; i++) {
                    ps.setInt(1, 1);
                    try (ResultSet rs = ps.executeQuery()) {
                        require(rs.next() && rs.getString(1).equals("uno"), "prepared select");
                        require(rs.getBigDecimal(2).toString().equals("1.5"), "numeric");
                    }
                }
                require(ps.unwrap(PGStatement.class).isUseServerPrepare(), "not server-prepared");
            }
            require(scalar(conn, "select count(*) from pg_prepared_statements where not from_sql") >= 1,
                    "no server-side prepared statement");
        });

        check("row level security: set_config(app.tenant)", () -> {
            try (PreparedStatement ps = conn.prepareStatement("select set_config('app.tenant', ?, false)")) {
                ps.setString(1, "globex");
                ps.executeQuery().close();
            }
            require(scalar(conn, "select count(*) from notes where tenant <> 'globex'") == 0, "other tenants visible");
            require(scalar(conn, "select count(*) from notes") > 0, "own tenant invisible");
            try (Statement s = conn.createStatement()) {
                s.execute("reset app.tenant");
            }
        });

        check("transaction commit, rollback, savepoint", () -> {
            conn.setAutoCommit(false);
            try (Statement s = conn.createStatement()) {
                s.executeUpdate("insert into " + t + " (id, v) values (10, 'committed')");
                conn.commit();
                s.executeUpdate("insert into " + t + " (id, v) values (11, 'rolled back')");
                conn.rollback();
                s.executeUpdate("insert into " + t + " (id, v) values (12, 'outer')");
                Savepoint sp = conn.setSavepoint();
                s.executeUpdate("update " + t + " set v = 'lost' where id = 12");
                conn.rollback(sp);
                conn.commit();
            } finally {
                conn.setAutoCommit(true);
            }
            try (Statement s = conn.createStatement();
                    ResultSet rs = s.executeQuery("select id, v from " + t + " where id >= 10 order by id")) {
                StringBuilder got = new StringBuilder();
                while (rs.next()) {
                    got.append(rs.getInt(1)).append('=').append(rs.getString(2)).append(';');
                }
                require(got.toString().equals("10=committed;12=outer;"), got.toString());
            }
        });

        check("large result: 100k rows (all at once, and with fetchSize through a portal)", () -> {
            try (Statement s = conn.createStatement();
                    ResultSet rs = s.executeQuery("select g, md5(g::text) from generate_series(1, 100000) g")) {
                int n = 0;
                while (rs.next()) {
                    n++;
                }
                require(n == 100000, "rows " + n);
            }
            conn.setAutoCommit(false);
            try (Statement s = conn.createStatement()) {
                s.setFetchSize(5000);
                long sum = 0;
                try (ResultSet rs = s.executeQuery("select g from generate_series(1, 100000) g")) {
                    while (rs.next()) {
                        sum += rs.getLong(1);
                    }
                }
                require(sum == 100000L * 100001L / 2, "sum " + sum);
                conn.commit();
            } finally {
                conn.setAutoCommit(true);
            }
        });

        check("COPY with CopyManager: text in/out, binary out/in", () -> {
            CopyManager cm = conn.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder data = new StringBuilder();
            for (int i = 100; i < 1100; i++) {
                data.append(i).append("\tcopied ").append(i).append('\n');
            }
            long n = cm.copyIn("copy " + t + " (id, v) from stdin", new StringReader(data.toString()));
            require(n == 1000, "copy in " + n);
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            cm.copyOut("copy (select id, v from " + t + " where id >= 100 order by id) to stdout", out);
            require(out.toString(StandardCharsets.UTF_8).equals(data.toString()), "copy out differs");
            ByteArrayOutputStream bin = new ByteArrayOutputStream();
            cm.copyOut("copy (select id, v from " + t + " where id >= 100) to stdout (format binary)", bin);
            try (Statement s = conn.createStatement()) {
                s.executeUpdate("delete from " + t + " where id >= 100");
            }
            n = cm.copyIn("copy " + t + " (id, v) from stdin (format binary)", new ByteArrayInputStream(bin.toByteArray()));
            require(n == 1000, "binary copy in " + n);
        });

        check("refused DDL: SQLException 42501, connection usable", () -> {
            SQLException e = expectState("42501", () -> {
                try (Statement s = conn.createStatement()) {
                    s.execute("create table compat_x (i int)");
                }
            });
            require(e.getMessage().contains("rolegate"), e.getMessage());
            require(scalar(conn, "select 1") == 1, "select after refusal");
            expectState("42501", () -> {
                try (PreparedStatement ps = conn.prepareStatement("drop table " + t)) {
                    ps.execute();
                }
            });
            require(scalar(conn, "select count(*) from " + t) > 0, "select after refusal");
        });

        check("refused DDL in the middle of a statement batch: BatchUpdateException 42501, nothing applied", () -> {
            try (Statement s = conn.createStatement()) {
                s.addBatch("insert into " + t + " (id, v) values (60, 'batch')");
                s.addBatch("create table compat_in_batch (i int)");
                s.addBatch("insert into " + t + " (id, v) values (61, 'batch')");
                try {
                    s.executeBatch();
                    throw new AssertionError("the batch was not refused");
                } catch (BatchUpdateException e) {
                    SQLException cause = e.getNextException();
                    require(cause != null && "42501".equals(cause.getSQLState()),
                            "expected a 42501 cause, got " + cause + " / " + e);
                }
            }
            // The driver sends an autocommit batch as one implicit transaction.
            require(scalar(conn, "select count(*) from " + t + " where id in (60, 61)") == 0, "batch partly applied");
        });

        check("refused DDL inside a transaction aborts it (25P02), rollback, connection usable", () -> {
            conn.setAutoCommit(false);
            try (Statement s = conn.createStatement()) {
                s.executeUpdate("insert into " + t + " (id, v) values (50, 'tx')");
                expectState("42501", () -> s.execute("alter table notes add column x int"));
                expectState("25P02", () -> s.executeQuery("select 1").close());
                conn.rollback();
            } finally {
                conn.setAutoCommit(true);
            }
            require(scalar(conn, "select count(*) from " + t + " where id = 50") == 0, "not rolled back");
        });

        check("cancel: Statement.cancel() stops pg_sleep(30) with 57014, connection usable", () -> {
            String sleep = "select pg_sleep(30) /* compat cancel target */";
            try (Statement s = conn.createStatement(); Connection watcher = connect(ca, "")) {
                Thread canceller = new Thread(() -> {
                    try {
                        waitUntilRunning(watcher, sleep);
                        s.cancel();
                    } catch (Exception e) {
                        // The expectation below reports a cancel that did not happen.
                        e.printStackTrace(System.out);
                    }
                });
                canceller.start();
                // Without the cancel the sleep would end normally, with no error.
                expectState("57014", () -> s.execute(sleep));
                canceller.join();
            }
            require(scalar(conn, "select 2") == 2, "select after cancel");
        });

        check("setQueryTimeout(2): 57014, connection usable", () -> {
            try (Statement s = conn.createStatement()) {
                // The driver's own timer sends the CancelRequest; the query reaches the
                // server long before it fires.
                s.setQueryTimeout(2);
                expectState("57014", () -> s.execute("select pg_sleep(30)"));
            }
            require(scalar(conn, "select 3") == 3, "select after timeout");
        });

        check("statement_timeout through the options startup parameter: 57014", () -> {
            try (Connection c = connect(ca, "?options=-c%20statement_timeout%3D500")) {
                expectState("57014", () -> scalar(c, "select pg_sleep(30)"));
                require(scalar(c, "select 4") == 4, "select after timeout");
            }
        });

        System.out.println("PostgreSQL JDBC " + conn.getMetaData().getDriverVersion() + ", Java "
                + System.getProperty("java.version"));
        conn.close();
        if (!FAILED.isEmpty()) {
            System.out.println(FAILED.size() + " check(s) failed: " + String.join(", ", FAILED));
            System.exit(1);
        }
    }
}
