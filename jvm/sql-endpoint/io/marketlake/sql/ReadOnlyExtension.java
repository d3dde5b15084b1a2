package io.marketlake.sql;

import java.net.URI;
import java.util.Set;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.execution.command.SetCommand;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.LogicalRelation;
import scala.Function1;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * `spark.sql.extensions` of the SQL endpoint: once the platform has registered its tables (the JVM system property
 * marketlake.sql.readOnly=true), every statement of every session is checked, before and after resolution, and
 * refused unless it only reads files under the lake root (marketlake.sql.lakeRoot). Refused: writes and DDL of any
 * kind (every command but SHOW, DESCRIBE, USE, EXPLAIN and reading a setting; Delta's own statements), queries on
 * files outside the lake (text.`/etc/passwd`) even if a client turns spark.sql.runSQLOnFiles back on for its
 * session, Java reflection (reflect, java_method, try_reflect), Hive UDF classes, and any source that is not files.
 */
public final class ReadOnlyExtension extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
  public static final String SWITCH = "marketlake.sql.readOnly";
  // The lakehouse root (a local path or a URI such as s3a://bucket/lake): the only files a query may read.
  public static final String LAKE = "marketlake.sql.lakeRoot";
  private static final Set<String> READ_COMMANDS =
      Set.of("SetCatalogAndNamespace", "SetNamespaceCommand", "ExplainCommand");
  // Leaves that read no file: SELECT 1, VALUES, range(), references to a WITH clause, a checked command's output,
  // and DataFrames the server builds itself (Delta reads its log through them; no SQL statement can make one).
  private static final Set<String> PLAIN_LEAVES =
      Set.of("OneRowRelation", "LocalRelation", "Range", "CTERelationRef", "CommandResult", "LogicalRDD");

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    // Before resolution too: Delta runs some statements (RESTORE) while the plan is being resolved, so a check of
    // the resolved plan would come after the write. List this extension before Delta's so its rule runs first.
    extensions.injectResolutionRule(
        new AbstractFunction1<SparkSession, Rule<LogicalPlan>>() {
          @Override
          public Rule<LogicalPlan> apply(SparkSession session) {
            return new Rule<LogicalPlan>() {
              @Override
              public LogicalPlan apply(LogicalPlan plan) {
                refuseIf(statementRefusal(plan), plan);
                return plan;
              }
            };
          }
        });
    extensions.injectCheckRule(
        new AbstractFunction1<SparkSession, Function1<LogicalPlan, BoxedUnit>>() {
          @Override
          public Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
            return new AbstractFunction1<LogicalPlan, BoxedUnit>() {
              @Override
              public BoxedUnit apply(LogicalPlan plan) {
                refuseIf(refusal(plan), plan);
                return BoxedUnit.UNIT;
              }
            };
          }
        });
    return BoxedUnit.UNIT;
  }

  private static void refuseIf(String refused, LogicalPlan plan) {
    if (refused != null && Boolean.getBoolean(SWITCH)) {
      throw new SecurityException("marketlake SQL endpoint is read-only: " + plan.nodeName() + " " + refused);
    }
  }

  /** Why a statement, before resolution, is refused: Delta's own statements and every non-read command. */
  static String statementRefusal(LogicalPlan plan) {
    String name = plan.getClass().getName();
    boolean delta = name.startsWith("io.delta.") || name.startsWith("org.apache.spark.sql.delta.");
    if (delta || name.endsWith("Statement") || (plan instanceof Command && !isReadCommand(plan))) {
      return "refused: only queries, SHOW, DESCRIBE, USE, EXPLAIN and reading a setting run here";
    }
    return null;
  }

  /** Why a resolved `plan` is refused, or null when it only reads the lake's tables. */
  static String refusal(LogicalPlan plan) {
    if (plan instanceof Command) {
      return isReadCommand(plan) ? null : "refused: only SHOW, DESCRIBE, USE, EXPLAIN and reading a setting run here";
    }
    for (LogicalPlan node : CollectionConverters.asJava(plan.collectWithSubqueries(identity()))) {
      if (node instanceof Command) {
        return "refused: a command inside a query";
      }
      if (node.children().isEmpty() && !isLakeOrPlainLeaf(node)) {
        return "refused: reads " + node.simpleString(200) + ", not a table of the lake";
      }
      for (Expression expression : CollectionConverters.asJava(node.expressions())) {
        String called = forbiddenCall(expression);
        if (called != null) {
          return "refused: calls " + called;
        }
      }
    }
    return null;
  }

  private static boolean isReadCommand(LogicalPlan plan) {
    String name = plan.getClass().getSimpleName();
    boolean spark = plan.getClass().getName().startsWith("org.apache.spark.sql.")
        && !plan.getClass().getName().startsWith("org.apache.spark.sql.delta.");
    if (plan instanceof SetCommand set) {
      return set.kv().isEmpty() || set.kv().get()._2().isEmpty();
    }
    return spark && (name.startsWith("Show") || name.startsWith("Describe") || READ_COMMANDS.contains(name));
  }

  private static boolean isLakeOrPlainLeaf(LogicalPlan leaf) {
    if (leaf instanceof LogicalRelation relation && relation.relation() instanceof HadoopFsRelation files) {
      return CollectionConverters.asJava(files.location().rootPaths()).stream().allMatch(ReadOnlyExtension::inLake);
    }
    return PLAIN_LEAVES.contains(leaf.getClass().getSimpleName());
  }

  /** Whether a (normalised: no "..") path lies under the lake root; local paths compare as plain paths. */
  private static boolean inLake(Path path) {
    String lake = System.getProperty(LAKE, "").replaceAll("/+$", "");
    URI uri = path.toUri();
    String where = uri.getScheme() == null || "file".equals(uri.getScheme()) ? uri.getPath() : uri.toString();
    return !lake.isEmpty() && where.startsWith(lake + "/");
  }

  private static String forbiddenCall(Expression expression) {
    String name = expression.getClass().getSimpleName();
    if (name.contains("Reflect") || name.startsWith("Hive")) {
      return expression.prettyName();
    }
    for (Expression child : CollectionConverters.asJava(expression.children())) {
      String called = forbiddenCall(child);
      if (called != null) {
        return called;
      }
    }
    return null;
  }

  private static scala.PartialFunction<LogicalPlan, LogicalPlan> identity() {
    return new scala.runtime.AbstractPartialFunction<LogicalPlan, LogicalPlan>() {
      @Override
      public boolean isDefinedAt(LogicalPlan node) {
        return true;
      }

      @Override
      public LogicalPlan apply(LogicalPlan node) {
        return node;
      }
    };
  }
}
