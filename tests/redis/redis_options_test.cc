#include "backend/redis/redis_options.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class ParseRedisUrlTest : public ::testing::Test {
 protected:
  static RedisOptions MustParse(const std::string& url) {
    absl::StatusOr<RedisOptions> options = ParseRedisUrl(url);
    EXPECT_TRUE(options.ok()) << url << ": " << options.status();
    return options.ok() ? *options : RedisOptions{};
  }

  // Checks that `url` fails with kInvalidArgument, the message contains
  // `problem`, and it does not contain `secret` (when given).
  static void ExpectError(const std::string& url, const std::string& problem,
                          const std::string& secret = "") {
    SCOPED_TRACE(url);
    absl::StatusOr<RedisOptions> options = ParseRedisUrl(url);
    ASSERT_FALSE(options.ok()) << "unexpectedly parsed as " << options->Name();
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(options.status().message(), HasSubstr(problem));
    if (!secret.empty()) {
      EXPECT_THAT(options.status().message(), Not(HasSubstr(secret)));
    }
  }
};

// Verifies that a bare host gets port 6379, db 0, no credentials, defaults.
TEST_F(ParseRedisUrlTest, DefaultPortAndDb) {
  RedisOptions o = MustParse("redis://localhost");
  EXPECT_FALSE(o.cluster);
  ASSERT_EQ(o.endpoints.size(), 1u);
  EXPECT_EQ(o.endpoints[0].host, "localhost");
  EXPECT_EQ(o.endpoints[0].port, 6379);
  EXPECT_EQ(o.db, 0);
  EXPECT_EQ(o.username, "");
  EXPECT_EQ(o.password, "");
  EXPECT_EQ(o.timeout_ms, 250);
  EXPECT_EQ(o.connect_timeout_ms, 1000);
  EXPECT_EQ(o.pool_size, 2);
  EXPECT_EQ(MustParse("redis://localhost/"), o);
  EXPECT_EQ(MustParse("redis://localhost:6379/0"), o);
}

// Verifies an explicit port and database, including the largest database.
TEST_F(ParseRedisUrlTest, PortAndDb) {
  RedisOptions o = MustParse("redis://10.0.0.5:7000/3");
  EXPECT_EQ(o.endpoints[0].host, "10.0.0.5");
  EXPECT_EQ(o.endpoints[0].port, 7000);
  EXPECT_EQ(o.db, 3);
  EXPECT_EQ(MustParse("redis://h:1/2147483647").db, 2147483647);
  EXPECT_EQ(MustParse("redis://h:65535").endpoints[0].port, 65535);
}

// Verifies that the scheme is case-insensitive.
TEST_F(ParseRedisUrlTest, SchemeCaseInsensitive) {
  EXPECT_EQ(MustParse("REDIS://h:1/2"), MustParse("redis://h:1/2"));
}

// Verifies `user:password@` credentials.
TEST_F(ParseRedisUrlTest, UserAndPassword) {
  RedisOptions o = MustParse("redis://alice:s3cret@cache.internal:6380/1");
  EXPECT_EQ(o.username, "alice");
  EXPECT_EQ(o.password, "s3cret");
  EXPECT_EQ(o.endpoints[0].host, "cache.internal");
  EXPECT_EQ(o.endpoints[0].port, 6380);
  EXPECT_EQ(o.db, 1);
}

// Verifies password-only credentials (`:password@`).
TEST_F(ParseRedisUrlTest, PasswordOnly) {
  RedisOptions o = MustParse("redis://:s3cret@host");
  EXPECT_EQ(o.username, "");
  EXPECT_EQ(o.password, "s3cret");
}

// Verifies that empty credentials (`@`, `:@`) mean no AUTH.
TEST_F(ParseRedisUrlTest, EmptyCredentials) {
  EXPECT_EQ(MustParse("redis://@host").password, "");
  EXPECT_EQ(MustParse("redis://:@host").password, "");
}

// Verifies percent-decoding of user and password, and that an unencoded '@',
// '/', '?' or ':' inside the password still parses (credentials end at the
// last '@').
TEST_F(ParseRedisUrlTest, PercentEncoding) {
  RedisOptions o = MustParse("redis://us%65r%3Ax:p%40ss%2Fw%3a%25rd+@host");
  EXPECT_EQ(o.username, "user:x");
  EXPECT_EQ(o.password, "p@ss/w:%rd+");
  EXPECT_EQ(o.endpoints[0].host, "host");
  RedisOptions raw = MustParse("redis://u:p@ss/w?r:d@host:1/4");
  EXPECT_EQ(raw.password, "p@ss/w?r:d");
  EXPECT_EQ(raw.endpoints[0].port, 1);
  EXPECT_EQ(raw.db, 4);
}

// Verifies IPv6 literals in brackets, with and without a port.
TEST_F(ParseRedisUrlTest, Ipv6) {
  RedisOptions o = MustParse("redis://:pw@[::1]:6380/2");
  ASSERT_EQ(o.endpoints.size(), 1u);
  EXPECT_EQ(o.endpoints[0].host, "::1");
  EXPECT_EQ(o.endpoints[0].port, 6380);
  EXPECT_EQ(o.db, 2);
  RedisOptions d = MustParse("redis://[2001:db8::10]");
  EXPECT_EQ(d.endpoints[0].host, "2001:db8::10");
  EXPECT_EQ(d.endpoints[0].port, 6379);
  EXPECT_EQ(MustParse("redis://[::ffff:10.0.0.1]:7").endpoints[0].host,
            "::ffff:10.0.0.1");
}

// Verifies a cluster URL with three seeds (mixed default port and IPv6).
TEST_F(ParseRedisUrlTest, ClusterThreeSeeds) {
  RedisOptions o = MustParse("redis+cluster://u:pw@n1:7000,n2,[fd00::3]:7002");
  EXPECT_TRUE(o.cluster);
  EXPECT_EQ(o.db, 0);
  EXPECT_EQ(o.username, "u");
  EXPECT_EQ(o.password, "pw");
  ASSERT_EQ(o.endpoints.size(), 3u);
  EXPECT_EQ(o.endpoints[0], (RedisEndpoint{"n1", 7000}));
  EXPECT_EQ(o.endpoints[1], (RedisEndpoint{"n2", 6379}));
  EXPECT_EQ(o.endpoints[2], (RedisEndpoint{"fd00::3", 7002}));
  EXPECT_TRUE(MustParse("redis+cluster://n1:7000/0").cluster);
  EXPECT_TRUE(MustParse("redis+cluster://n1:7000/").cluster);
}

// Verifies a single-seed cluster URL.
TEST_F(ParseRedisUrlTest, ClusterOneSeed) {
  RedisOptions o = MustParse("redis+cluster://n1");
  EXPECT_TRUE(o.cluster);
  ASSERT_EQ(o.endpoints.size(), 1u);
  EXPECT_EQ(o.endpoints[0], (RedisEndpoint{"n1", 6379}));
}

// Verifies the TLS schemes: rediss:// and rediss+cluster://, named as such.
TEST_F(ParseRedisUrlTest, TlsSchemes) {
  RedisOptions single = MustParse("rediss://:pw@host:6380/2");
  EXPECT_TRUE(single.tls);
  EXPECT_FALSE(single.cluster);
  EXPECT_EQ(single.Name(), "rediss://host:6380/2");
  EXPECT_EQ(single.TlsName(), "host");
  RedisOptions cluster = MustParse("REDISS+CLUSTER://10.0.0.1:7000,10.0.0.2:7000");
  EXPECT_TRUE(cluster.tls);
  EXPECT_TRUE(cluster.cluster);
  EXPECT_EQ(cluster.Name(), "rediss+cluster://10.0.0.1:7000,10.0.0.2:7000");
  EXPECT_EQ(cluster.TlsName(), "10.0.0.1");
  cluster.tls_options.server_name = "redis.internal";
  EXPECT_EQ(cluster.TlsName(), "redis.internal");
  EXPECT_FALSE(MustParse("redis://host").tls);
  EXPECT_NE(MustParse("redis://host").IdentityKey(),
            MustParse("rediss://host").IdentityKey());
  ExpectError("rediss+cluster://:pw@a,b/1", "rediss+cluster:// has no databases", "pw");
}

// Verifies unsupported schemes.
TEST_F(ParseRedisUrlTest, BadScheme) {
  ExpectError("redis+sentinel://host", "unsupported scheme 'redis+sentinel'");
  ExpectError("http://host", "unsupported scheme 'http'");
  ExpectError("localhost:6379", "expected 'redis://...' or 'redis+cluster://...'");
  ExpectError("redis:/host", "expected 'redis://...'");
  ExpectError("", "expected 'redis://...'");
}

// Verifies that an empty host is rejected in every position.
TEST_F(ParseRedisUrlTest, EmptyHost) {
  ExpectError("redis://", "empty host");
  ExpectError("redis:///0", "empty host");
  ExpectError("redis://:6379", "empty host");
  ExpectError("redis://:pw@:6379", "empty host", "pw");
  ExpectError("redis://[]:6379", "empty host");
  ExpectError("redis+cluster://a,,b", "empty host");
  ExpectError("redis+cluster://a,", "empty host");
}

// Verifies bad and out-of-range ports.
TEST_F(ParseRedisUrlTest, BadPort) {
  ExpectError("redis://h:0", "bad port '0' (expected 1-65535)");
  ExpectError("redis://h:65536", "bad port '65536'");
  ExpectError("redis://h:99999999999", "bad port");
  ExpectError("redis://h:-1", "bad port '-1'");
  ExpectError("redis://h:63x9", "bad port '63x9'");
  ExpectError("redis://h:", "empty port");
  ExpectError("redis://[::1]:", "empty port");
  ExpectError("redis+cluster://a:1,b:x", "bad port 'x'");
}

// Verifies bad hosts: unbracketed IPv6, bad characters, broken brackets.
TEST_F(ParseRedisUrlTest, BadHost) {
  ExpectError("redis://::1:6379", "IPv6 addresses must be in brackets");
  ExpectError("redis://fe80::1", "IPv6 addresses must be in brackets");
  ExpectError("redis://ho!st:1", "bad host 'ho!st'");
  ExpectError("redis://[::1:6379", "unterminated '['");
  ExpectError("redis://[zz::1]:1", "bad IPv6 address 'zz::1'");
  ExpectError("redis://[localhost]", "bad IPv6 address");
  ExpectError("redis://[::1]x", "unexpected 'x' after '[::1]'");
}

// Verifies bad database paths and trailing garbage after the host.
TEST_F(ParseRedisUrlTest, BadDbAndTrailingGarbage) {
  ExpectError("redis://h/abc", "bad database '/abc'");
  ExpectError("redis://h/-1", "bad database '/-1'");
  ExpectError("redis://h/0/extra", "bad database '/0/extra'");
  ExpectError("redis://h/2147483648", "bad database");
  ExpectError("redis://h/99999999999999999999", "bad database");
  ExpectError("redis://h//", "bad database");
  ExpectError("redis://h:6379 ", "whitespace");
  ExpectError("redis://h\n", "control characters");
}

// Verifies that a cluster takes no database other than 0.
TEST_F(ParseRedisUrlTest, ClusterWithDb) {
  ExpectError("redis+cluster://:pw@a,b/1", "redis+cluster:// has no databases", "pw");
}

// Verifies that a plain redis:// URL takes exactly one host.
TEST_F(ParseRedisUrlTest, SeveralHostsNeedCluster) {
  ExpectError("redis://:pw@a:1,b:2", "several hosts need redis+cluster://", "pw");
}

// Verifies that query strings and fragments are rejected as unsupported.
TEST_F(ParseRedisUrlTest, QueryStringUnsupported) {
  ExpectError("redis://:pw@h:6379/0?timeout=1s", "query strings", "pw");
  ExpectError("redis://h?db=1", "not supported");
  ExpectError("redis://h/0#frag", "fragments");
}

// Verifies credential errors: lone userinfo, user without password, bad
// percent-encoding; none of them echo the secret.
TEST_F(ParseRedisUrlTest, BadCredentials) {
  ExpectError("redis://hunter2@host", "ambiguous", "hunter2");
  ExpectError("redis://alice:@host", "a username needs a password");
  ExpectError("redis://:hunter2%zz@host", "bad percent-encoding in the password",
              "hunter2");
  ExpectError("redis://:hunter2%2@host", "bad percent-encoding in the password",
              "hunter2");
  ExpectError("redis://al%g1ce:hunter2@host", "bad percent-encoding in the username",
              "hunter2");
}

// Verifies that no error message ever contains the password, whatever fails.
TEST_F(ParseRedisUrlTest, ErrorsNeverContainPassword) {
  const std::string secret = "Zq9-secret-Zq9";
  const std::vector<std::string> urls = {
      "rediss://u:" + secret + "@h:0",  "ftp://u:" + secret + "@h",
      "redis://u:" + secret + "@",      "redis://u:" + secret + "@h:0",
      "redis://u:" + secret + "@h:1/x", "redis://u:" + secret + "@h?x=1",
      "redis://u:" + secret + "@a,b",   "redis://u:" + secret + "@::1",
      "redis://u:" + secret + " @h",    "redis+cluster://u:" + secret + "@a/3",
      "redis://" + secret + "@h",
  };
  for (const std::string& url : urls) {
    SCOPED_TRACE(url);
    absl::StatusOr<RedisOptions> options = ParseRedisUrl(url);
    ASSERT_FALSE(options.ok());
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(options.status().message(), Not(HasSubstr(secret)));
    EXPECT_THAT(options.status().ToString(), Not(HasSubstr(secret)));
  }
}

// ---------------------------------------------------------------------------

class RedisOptionsTest : public ::testing::Test {};

// Verifies Name() for single-node URLs: host, port, db, no credentials.
TEST_F(RedisOptionsTest, NameSingleNode) {
  absl::StatusOr<RedisOptions> o = ParseRedisUrl("redis://alice:s3cret@cache:6380/4");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->Name(), "redis://cache:6380/4");
  o = ParseRedisUrl("redis://:s3cret@[::1]");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->Name(), "redis://[::1]:6379/0");
  EXPECT_THAT(o->Name(), Not(HasSubstr("s3cret")));
}

// Verifies Name() for a cluster: every seed, no credentials, no db.
TEST_F(RedisOptionsTest, NameCluster) {
  absl::StatusOr<RedisOptions> o =
      ParseRedisUrl("redis+cluster://alice:s3cret@n1:7000,n2,[fd00::3]:7002");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->Name(), "redis+cluster://n1:7000,n2:6379,[fd00::3]:7002");
  EXPECT_THAT(o->Name(), Not(HasSubstr("alice")));
  EXPECT_THAT(o->Name(), Not(HasSubstr("s3cret")));
}

// Verifies that equal options have equal identity keys and that changing any
// single field changes the key.
TEST_F(RedisOptionsTest, IdentityKeyCoversEveryField) {
  RedisOptions base;
  base.endpoints = {{"h1", 6379}};
  base.username = "u";
  base.password = "p";
  base.tls = true;
  RedisOptions copy = base;
  EXPECT_EQ(base.IdentityKey(), copy.IdentityKey());

  const std::vector<std::pair<std::string, std::function<void(RedisOptions&)>>> changes =
      {
          {"cluster", [](RedisOptions& o) { o.cluster = true; }},
          {"host", [](RedisOptions& o) { o.endpoints[0].host = "h2"; }},
          {"port", [](RedisOptions& o) { o.endpoints[0].port = 6380; }},
          {"extra endpoint",
           [](RedisOptions& o) {
             o.endpoints.push_back({"h2", 1});
           }},
          {"username", [](RedisOptions& o) { o.username = "v"; }},
          {"no username", [](RedisOptions& o) { o.username = ""; }},
          {"password", [](RedisOptions& o) { o.password = "q"; }},
          {"db", [](RedisOptions& o) { o.db = 1; }},
          {"timeout", [](RedisOptions& o) { o.timeout_ms = 251; }},
          {"connect_timeout", [](RedisOptions& o) { o.connect_timeout_ms = 999; }},
          {"pool_size", [](RedisOptions& o) { o.pool_size = 3; }},
          {"tls", [](RedisOptions& o) { o.tls = false; }},
          {"ca_file", [](RedisOptions& o) { o.tls_options.ca_file = "ca.pem"; }},
          {"cert_file", [](RedisOptions& o) { o.tls_options.cert_file = "c.pem"; }},
          {"key_file", [](RedisOptions& o) { o.tls_options.key_file = "k.pem"; }},
          {"server_name", [](RedisOptions& o) { o.tls_options.server_name = "r"; }},
          {"insecure_skip_verify",
           [](RedisOptions& o) { o.tls_options.insecure_skip_verify = true; }},
      };
  for (const auto& [what, change] : changes) {
    RedisOptions other = base;
    change(other);
    EXPECT_NE(other.IdentityKey(), base.IdentityKey()) << what;
  }
}

// Verifies that field boundaries cannot be shifted to forge an equal key.
TEST_F(RedisOptionsTest, IdentityKeyIsUnambiguous) {
  RedisOptions a;
  a.endpoints = {{"h", 1}};
  a.username = "u;password=";
  a.password = "";
  RedisOptions b;
  b.endpoints = {{"h", 1}};
  b.username = "u";
  b.password = ";password=";
  EXPECT_NE(a.IdentityKey(), b.IdentityKey());
}

// Verifies redis.timeout and redis.connect_timeout accept 1ms..1m and refuse
// anything else at parse time with the field and the range (2^63-1 ms failed
// every decision).
TEST(RedisTimeoutRangeTest, CheckedAtParseTime) {
  const auto yaml = [](const std::string& key, const std::string& value) {
    return "tenants:\n  - name: a\n    backend: \"redis://h:6379\"\n    redis:\n      " +
           key + ": " + value + "\ndefault_tenant: a\n";
  };
  for (const std::string key : {"timeout", "connect_timeout"}) {
    for (const std::string value : {"1ms", "60s"}) {
      absl::StatusOr<Config> config = ParseConfig(yaml(key, value), "test.yaml");
      EXPECT_TRUE(config.ok()) << key << ": " << value << ": " << config.status();
    }
    for (const std::string value : {"9223372036854775807ms", "0ms", "60001ms"}) {
      absl::StatusOr<Config> config = ParseConfig(yaml(key, value), "test.yaml");
      ASSERT_FALSE(config.ok()) << key << ": " << value;
      EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(config.status().message()),
                  HasSubstr("test.yaml:5:" + std::to_string(9 + key.size()) +
                            ": tenants[0].redis." + key + ": duration '" + value +
                            "' is out of range: must be 1ms..1m"));
    }
  }
}

}  // namespace
}  // namespace traffik
