package io.marketlake.sql;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * HiveServer2 CUSTOM authentication for the SQL endpoint: one account, MARKETLAKE_SQL_USER / MARKETLAKE_SQL_PASSWORD
 * from the server process's environment (never from Spark's configuration, which `SET` would list). No password
 * set means nobody gets in.
 */
public final class PasswordAuthenticator implements PasswdAuthenticationProvider {
  @Override
  public void Authenticate(String user, String password) throws AuthenticationException {
    String expected = System.getenv("MARKETLAKE_SQL_PASSWORD");
    boolean userOk = same(System.getenv("MARKETLAKE_SQL_USER"), user);
    if (expected == null || expected.isEmpty() || !(same(expected, password) & userOk)) {
      throw new AuthenticationException("wrong user or password");
    }
  }

  /** Constant-time comparison: the answer's timing tells nothing about the password. */
  private static boolean same(String expected, String given) {
    return expected != null && given != null
        && MessageDigest.isEqual(expected.getBytes(StandardCharsets.UTF_8), given.getBytes(StandardCharsets.UTF_8));
  }
}
