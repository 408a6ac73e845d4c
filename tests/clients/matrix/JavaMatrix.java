// JavaMatrix.java - MariaDB Connector/J through switchyard vs. straight to the primary.
//
// usage: java -cp /usr/share/java/mariadb-java-client.jar JavaMatrix.java \
//          --proxy HOST:PORT --direct HOST:PORT [--only NAME,...] [--dump]
// (JDK 11+ source-file mode: no separate compile step.)
//
// Same idea as py_matrix.py: every check runs once against --proxy and once against --direct
// on fresh connections (strict/strict, sbtest) and records normalized observations (values
// with their Java classes, ResultSetMetaData, update counts, generated keys, SQLWarnings,
// error code / SQLSTATE / exception class / message).  Both lists must be equal.
// Output: `CHECK java <name> PASS|FAIL|SKIP <detail>` per check, then `<N> passed, <M> failed`;
// exit 1 if any check failed.  Only loopback addresses; loops are bounded, sockets time out.
import java.security.MessageDigest;
import java.sql.*;
import java.util.*;

public class JavaMatrix {
    static final String USER = "strict", PASSWORD = "strict", DB = "sbtest", PREFIX = "mx_java_";
    static final String OTHER_DB = "mx_db";
    static final int RYW_ROUNDS = 20, MAX_RESULTS = 20;
    static boolean dump = false;

    interface Check { void run(Side side) throws Exception; }

    static final class SetupFailed extends Exception {}

    // ------------------------------------------------------------ normalization
    static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder();
        for (byte x : b) sb.append(String.format("%02x", x));
        return sb.toString();
    }

    static String fingerprint(byte[] b) throws Exception {
        return hex(MessageDigest.getInstance("SHA-256").digest(b)).substring(0, 16);
    }

    static String norm(Object v) throws Exception {
        if (v == null) return "null";
        if (v instanceof byte[]) {
            byte[] b = (byte[]) v;
            return "byte[]:" + (b.length <= 64 ? hex(b) : "[" + b.length + "]sha256=" + fingerprint(b));
        }
        return v.getClass().getSimpleName() + ":" + v;
    }

    static String resultSet(ResultSet rs) throws Exception {
        ResultSetMetaData md = rs.getMetaData();
        List<String> cols = new ArrayList<>(), rows = new ArrayList<>();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            cols.add(md.getColumnLabel(i) + "/" + md.getColumnType(i) + "/" + md.getColumnTypeName(i)
                    + "/" + md.getPrecision(i) + "/" + md.getScale(i) + "/" + md.isNullable(i));
        }
        for (int n = 0; rs.next() && n < 1000; n++) {
            List<String> row = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) row.add(norm(rs.getObject(i)));
            rows.add(row.toString());
        }
        return "cols=" + cols + " rows=" + rows;
    }

    static String warnings(SQLWarning w) {
        List<String> out = new ArrayList<>();
        for (int n = 0; w != null && n < 20; n++, w = w.getNextWarning()) {
            out.add(w.getErrorCode() + "/" + w.getSQLState() + "/" + w.getMessage());
        }
        return out.toString();
    }

    // Connector/J puts the connection id into messages: "(conn=42) Duplicate entry ..."
    static String error(SQLException e) {
        String msg = String.valueOf(e.getMessage()).replaceAll("\\(conn=\\d+\\) ", "");
        return "error:" + e.getClass().getSimpleName() + "/" + e.getErrorCode() + "/" + e.getSQLState() + "/" + msg;
    }

    // every result of an executed statement: result sets, update counts, warnings
    static String results(Statement st, boolean isResultSet) throws Exception {
        List<String> parts = new ArrayList<>();
        for (int i = 0; i < MAX_RESULTS; i++) {
            if (isResultSet) {
                try (ResultSet rs = st.getResultSet()) { parts.add(resultSet(rs)); }
            } else {
                int count = st.getUpdateCount();
                if (count == -1) break;
                parts.add("update=" + count);
            }
            isResultSet = st.getMoreResults();
        }
        return parts + " warnings=" + warnings(st.getWarnings());
    }

    static String shorten(String s, int limit) {
        return s.length() <= limit ? s : s.substring(0, limit) + "...";
    }

    // ------------------------------------------------------------ one side of a check
    static final class Side {
        final String label, host;
        final int port;
        final List<String[]> obs = new ArrayList<>();
        final List<String> violations = new ArrayList<>();
        final List<Connection> conns = new ArrayList<>();
        String crashed;

        Side(String label, String addr) {
            this.label = label;
            int i = addr.lastIndexOf(':');
            this.host = addr.substring(0, i);
            this.port = Integer.parseInt(addr.substring(i + 1));
        }

        Connection connect(String options) throws SQLException {
            String url = "jdbc:mariadb://" + host + ":" + port + "/" + DB
                    + "?connectTimeout=10000&socketTimeout=60000" + options;
            Connection c = DriverManager.getConnection(url, USER, PASSWORD);
            conns.add(c);
            return c;
        }

        void note(String label, String value) { obs.add(new String[] {label, value}); }

        void setup(Connection c, String... statements) throws SQLException, SetupFailed {
            try (Statement st = c.createStatement()) {
                for (String sql : statements) {
                    try {
                        st.execute(sql);
                    } catch (SQLException e) {
                        note("setup: " + sql, error(e));
                        throw new SetupFailed();
                    }
                }
            }
        }

        String table(Connection c, String suffix, String columns) throws Exception {
            String name = PREFIX + suffix;
            setup(c, "DROP TABLE IF EXISTS " + name,
                    "CREATE TABLE " + name + " (" + columns + ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4");
            return name;
        }

        // a plain Statement; returns false on an SQLException
        boolean q(Connection c, String sql) throws Exception { return q(c, sql, sql); }

        boolean q(Connection c, String sql, String label) throws Exception {
            try (Statement st = c.createStatement()) {
                boolean rs = st.execute(sql, Statement.RETURN_GENERATED_KEYS);
                String keys = rs ? "" : " keys=" + generatedKeys(st);
                note(label, results(st, rs) + keys);
                return true;
            } catch (SQLException e) {
                note(label, error(e));
                return false;
            }
        }

        // a PreparedStatement (server-side when the connection has useServerPrepStmts=true)
        boolean p(Connection c, String sql, String label, Object... params) throws Exception {
            try (PreparedStatement ps = c.prepareStatement(sql, Statement.RETURN_GENERATED_KEYS)) {
                for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
                boolean rs = ps.execute();
                String keys = rs ? "" : " keys=" + generatedKeys(ps);
                note(label, results(ps, rs) + keys);
                return true;
            } catch (SQLException e) {
                note(label, error(e));
                return false;
            }
        }

        static String generatedKeys(Statement st) throws Exception {
            try (ResultSet rs = st.getGeneratedKeys()) { return resultSet(rs); }
        }

        void expect(boolean ok, String what) { if (!ok) violations.add(what); }

        void run(Check check) {
            try {
                check.run(this);
            } catch (SetupFailed e) {
                // already noted
            } catch (SQLException e) {
                note("uncaught driver error", error(e));
            } catch (Exception e) {
                crashed = e.toString();
            } finally {
                for (Connection c : conns) {
                    try { c.close(); } catch (SQLException ignored) { }
                }
                conns.clear();
            }
        }
    }

    // ------------------------------------------------------------ checks
    static final String TYPE_COLUMNS = "id INT PRIMARY KEY,"
            + " ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,"
            + " mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,"
            + " de DECIMAL(30,10), fl FLOAT, db DOUBLE, bt BIT(12),"
            + " da DATE, dt DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(6), yr YEAR,"
            + " ch CHAR(8), vc VARCHAR(64), bn BINARY(4), vb VARBINARY(32), bl BLOB, tx TEXT,"
            + " en ENUM('small','medium','large'), st SET('a','b','c'), js JSON";
    static final String TYPE_LITERAL_ROW = "(1, -128, 255, -32768, 65535, -8388608, 16777215,"
            + " -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,"
            + " '-12345678901234567890.0123456789', 1.5, -2.25e-300, b'101010101010', '2024-02-29',"
            + " '2024-02-29 23:59:58.123456', '2021-06-15 12:00:00.250', '12:34:56.789012', 2155,"
            + " 'abc', 'Grüße, 世界 🦀', X'00FF7F80', X'000102FF', X'DEADBEEF00', 'κείμενο 📄',"
            + " 'medium', 'c,a', '{\"k\": [1, 2.5, \"ü\", null], \"o\": {\"e\": \"🦀\"}}')";

    static Object[] typeParams() {
        byte[] all = new byte[256];
        for (int i = 0; i < 256; i++) all[i] = (byte) i;
        return new Object[] {2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0L, Long.MAX_VALUE,
            new java.math.BigInteger("18446744073709551615"), new java.math.BigDecimal("0.0000000001"),
            -0.25f, 1e300, 5, java.sql.Date.valueOf("1999-12-31"),
            java.sql.Timestamp.valueOf("2000-01-01 00:00:00.000001"),
            java.sql.Timestamp.valueOf("2030-05-06 07:08:09"), java.sql.Time.valueOf("23:59:59"), 1901,
            "x", "ASCII only", new byte[] {0, 39, 92, 34}, new byte[] {0, 10, 13, 26}, all,
            "it's a \"quoted\" \\ text", "large", "a,b", "{\"n\": 1}"};
    }

    static Check types(String options, boolean prepared) {
        return side -> {
            Connection c = side.connect(options);
            String t = side.table(c, prepared ? "types_prep" : "types", TYPE_COLUMNS);
            side.q(c, "INSERT INTO " + t + " VALUES " + TYPE_LITERAL_ROW, "insert literal row");
            Object[] params = typeParams();
            String marks = String.join(", ", Collections.nCopies(params.length, "?"));
            side.p(c, "INSERT INTO " + t + " VALUES (" + marks + ")", "insert param row", params);
            side.q(c, "INSERT INTO " + t + " (id) VALUES (3)", "insert null row");
            if (prepared) side.p(c, "SELECT * FROM " + t + " WHERE id >= ? ORDER BY id", "select all", 1);
            else side.q(c, "SELECT * FROM " + t + " ORDER BY id", "select all");
        };
    }

    static void errors(Side side) throws Exception {
        Connection c = side.connect("&useServerPrepStmts=true");
        String t = side.table(c, "err", "id INT PRIMARY KEY, v INT");
        side.q(c, "SELEC 1", "syntax error");
        side.q(c, "INSERT INTO " + t + " VALUES (1, 1)");
        side.q(c, "INSERT INTO " + t + " VALUES (1, 2)", "duplicate key");
        side.p(c, "INSERT INTO " + t + " VALUES (?, ?)", "duplicate key (prepared)", 1, 3);
        side.q(c, "SELECT * FROM " + PREFIX + "no_such_table", "unknown table");
        side.p(c, "SELECT * FROM " + PREFIX + "no_such_table WHERE id = ?", "unknown table (prepare)", 1);
        side.q(c, "SELECT no_such_column FROM " + t, "unknown column");
        side.q(c, "SELECT 1 AS still_usable");
    }

    static void multiResults(Side side) throws Exception {
        Connection c = side.connect("&allowMultiQueries=true");
        String t = side.table(c, "multi", "id INT PRIMARY KEY, v VARCHAR(10)");
        side.q(c, "SELECT 1 AS a; SELECT 'x' AS b, 2.5 AS c; INSERT INTO " + t
                + " VALUES (1, 'one'), (2, 'two'); SELECT COUNT(*) AS n FROM " + t, "batch");
        side.q(c, "SELECT 1 AS first; SELEC 2; SELECT 3 AS never", "batch with error");
        side.q(c, "SELECT v FROM " + t + " ORDER BY id", "usable after batch");
    }

    static void storedProcedure(Side side) throws Exception {
        Connection c = side.connect("");
        String t = side.table(c, "proc", "id INT PRIMARY KEY, v VARCHAR(10)");
        String p = PREFIX + "p";
        side.setup(c, "DROP PROCEDURE IF EXISTS " + p, "CREATE PROCEDURE " + p + "(IN n INT) BEGIN"
                + " INSERT INTO " + t + " VALUES (n, 'called'); SELECT n AS n, 'one' AS first;"
                + " SELECT id, v, n * 2 AS doubled FROM " + t + " ORDER BY id; END");
        for (String label : new String[] {"call 21", "call 21 again (duplicate key)"}) {
            try (CallableStatement cs = c.prepareCall("{call " + p + "(?)}")) {
                cs.setInt(1, 21);
                side.note(label, results(cs, cs.execute()));
            } catch (SQLException e) {
                side.note(label, error(e));
            }
        }
        side.q(c, "SELECT COUNT(*) FROM " + t, "after calls");
    }

    static void transactions(Side side) throws Exception {
        Connection c = side.connect("");
        String t = side.table(c, "txn", "id INT PRIMARY KEY, v INT");
        c.setAutoCommit(false);
        side.q(c, "INSERT INTO " + t + " VALUES (1, 10)");
        side.q(c, "SELECT COUNT(*) FROM " + t, "inside transaction");
        c.rollback();
        side.q(c, "SELECT COUNT(*) FROM " + t, "after rollback");
        side.q(c, "INSERT INTO " + t + " VALUES (2, 20)");
        c.commit();
        side.q(c, "SELECT * FROM " + t, "after commit");
        side.q(c, "INSERT INTO " + t + " VALUES (2, 21)", "duplicate key");
        c.rollback();
        Connection other = side.connect("");
        side.q(other, "SET SESSION innodb_lock_wait_timeout = 2");
        side.q(other, "UPDATE " + t + " SET v = v + 1 WHERE id = 2", "update from another session");
        side.q(other, "SELECT v FROM " + t + " WHERE id = 2", "other session reads its write");
        side.note("autocommit", String.valueOf(c.getAutoCommit()));
    }

    static void warningsCheck(Side side) throws Exception {
        Connection c = side.connect("");
        String t = side.table(c, "warn", "id INT PRIMARY KEY, v VARCHAR(4)");
        side.q(c, "INSERT INTO " + t + " VALUES (1, 'a')");
        side.q(c, "INSERT IGNORE INTO " + t + " VALUES (1, 'b'), (2, 'c')", "insert ignore");
        side.q(c, "SHOW WARNINGS", "show warnings");
        side.q(c, "SELECT @@warning_count");
    }

    static void batch(Side side) throws Exception {
        Connection c = side.connect("&useServerPrepStmts=true");
        String t = side.table(c, "batch", "id INT AUTO_INCREMENT PRIMARY KEY, v INT");
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t + " (v) VALUES (?)")) {
            for (int i = 1; i <= 5; i++) { ps.setInt(1, i); ps.addBatch(); }
            side.note("executeBatch", Arrays.toString(ps.executeBatch()));
        }
        side.q(c, "SELECT COUNT(*), SUM(v) FROM " + t, "after batch");
    }

    static void sessionState(Side side) throws Exception {
        Connection c = side.connect("");
        side.setup(c, "CREATE DATABASE IF NOT EXISTS " + OTHER_DB);
        side.q(c, "SET @a = 5, time_zone = '+05:30', sql_mode = 'PIPES_AS_CONCAT'");
        side.q(c, "SELECT @a, @@session.time_zone, 'a' || 'b' AS joined, CAST(FROM_UNIXTIME(0) AS CHAR)");
        c.setCatalog(OTHER_DB);
        side.q(c, "SELECT DATABASE()", "after setCatalog");
        side.note("getCatalog", c.getCatalog());
        side.expect(c.isValid(5), "isValid() false on " + side.label);
    }

    static void readYourWrites(Side side) throws Exception {
        Connection c = side.connect("&useServerPrepStmts=true");
        String t = side.table(c, "ryw", "id INT PRIMARY KEY, v INT");
        for (int i = 1; i <= RYW_ROUNDS; i++) {
            side.p(c, "INSERT INTO " + t + " VALUES (?, ?)", "insert " + i, i, i * 10);
            side.p(c, "SELECT v FROM " + t + " WHERE id = ?", "read " + i, i);
        }
    }

    static void connectCheck(Side side) throws Exception {
        Connection c = side.connect("");
        side.note("server version", c.getMetaData().getDatabaseProductVersion());
        boolean ok = side.q(c, "SELECT 1 AS one, DATABASE() AS db, CURRENT_USER() AS user");
        side.expect(ok, "SELECT 1 failed on " + side.label);
    }

    static final LinkedHashMap<String, Check> CHECKS = new LinkedHashMap<>();
    static {
        CHECKS.put("connect", JavaMatrix::connectCheck);
        CHECKS.put("types_text", types("", false));
        CHECKS.put("types_prepared", types("&useServerPrepStmts=true", true));
        CHECKS.put("errors", JavaMatrix::errors);
        CHECKS.put("multi_results", JavaMatrix::multiResults);
        CHECKS.put("stored_procedure", JavaMatrix::storedProcedure);
        CHECKS.put("transactions", JavaMatrix::transactions);
        CHECKS.put("warnings", JavaMatrix::warningsCheck);
        CHECKS.put("batch", JavaMatrix::batch);
        CHECKS.put("session_state", JavaMatrix::sessionState);
        CHECKS.put("read_your_writes", JavaMatrix::readYourWrites);
    }

    // ------------------------------------------------------------ comparison and main
    static String firstDifference(List<String[]> proxy, List<String[]> direct) {
        for (int i = 0; i < Math.max(proxy.size(), direct.size()); i++) {
            String[] p = i < proxy.size() ? proxy.get(i) : null;
            String[] d = i < direct.size() ? direct.get(i) : null;
            if (!Arrays.equals(p, d)) {
                String label = (p != null ? p : d)[0];
                return "at #" + i + " " + shorten(label, 80) + ": proxy=" + shorten(p == null ? "-" : p[1], 240)
                        + " direct=" + shorten(d == null ? "-" : d[1], 240);
            }
        }
        return null;
    }

    static String[] verdict(Side proxy, Side direct) {
        for (Side s : new Side[] {proxy, direct}) {
            if (s.crashed != null) return new String[] {"FAIL", "harness error on " + s.label + ": " + s.crashed};
        }
        List<String> violations = new ArrayList<>(proxy.violations);
        violations.addAll(direct.violations);
        if (!violations.isEmpty()) return new String[] {"FAIL", String.join("; ", violations)};
        String diff = firstDifference(proxy.obs, direct.obs);
        if (diff != null) return new String[] {"FAIL", diff};
        return new String[] {"PASS", proxy.obs.size() + " observations equal"};
    }

    static String checkAddr(String addr) {
        String host = addr.substring(0, Math.max(0, addr.lastIndexOf(':')));
        if (!(host.equals("localhost") || host.startsWith("127.") || host.equals("::1"))) {
            throw new IllegalArgumentException(addr + ": only loopback HOST:PORT is allowed");
        }
        return addr;
    }

    public static void main(String[] args) throws Exception {
        String proxyAddr = null, directAddr = null;
        Set<String> only = new HashSet<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--proxy": proxyAddr = checkAddr(args[++i]); break;
                case "--direct": directAddr = checkAddr(args[++i]); break;
                case "--only": only.addAll(Arrays.asList(args[++i].split(","))); break;
                case "--dump": dump = true; break;
                default: throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (proxyAddr == null || directAddr == null) {
            throw new IllegalArgumentException("usage: JavaMatrix.java --proxy HOST:PORT --direct HOST:PORT");
        }
        int passed = 0, failed = 0;
        for (Map.Entry<String, Check> e : CHECKS.entrySet()) {
            String name = e.getKey();
            if (!only.isEmpty() && !name.equals("connect") && !only.contains(name)) continue;
            long started = System.nanoTime();
            Side proxy = new Side("proxy", proxyAddr), direct = new Side("direct", directAddr);
            proxy.run(e.getValue());
            direct.run(e.getValue());
            String[] v = verdict(proxy, direct);
            if (dump) for (String[] o : direct.obs) System.out.println("  " + o[0] + " => " + shorten(o[1], 2000));
            System.out.printf("CHECK java %s %s %s (%.1fs)%n", name, v[0], v[1], (System.nanoTime() - started) / 1e9);
            if (v[0].equals("PASS")) passed++; else failed++;
            if (name.equals("connect") && v[0].equals("FAIL")) break;
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed > 0 ? 1 : 0);
    }
}
