#include "config/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "backend/redis/redis_factory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A Redis tenant's options, as the Redis backend's factory parses them from
// the raw settings config keeps; nullopt for a tenant on another backend.
std::optional<RedisOptions> RedisOf(const TenantConfig& tenant) {
  if (tenant.backend == kMemoryBackend) return std::nullopt;
  absl::StatusOr<RedisOptions> options =
      ParseRedisSpec(tenant.backend_spec, YamlReader("test.yaml"));
  EXPECT_TRUE(options.ok()) << options.status();
  if (!options.ok()) return std::nullopt;
  return *options;
}

constexpr std::string_view kExampleConfig = R"yaml(
listen: "127.0.0.1:50051"
metrics_listen: "127.0.0.1:9464"
throttles:
  - uid: api_quota
    limit: 1000
    period: 1h
tenants:
  - name: default
    backend: memory
  - name: gold
    backend: memory
    prefix: gold
    quota_multiplier: 2
    allow_inline_specs: false
default_tenant: default
)yaml";

// ---------------------------------------------------------------------------
// Valid configurations.

class ParseConfigTest : public ::testing::Test {
 protected:
  static Config MustParse(std::string_view yaml) {
    absl::StatusOr<Config> config = ParseConfig(yaml, "test.yaml");
    EXPECT_TRUE(config.ok()) << config.status();
    return config.ok() ? *config : Config{};
  }
};

// Verifies that the documented example config parses into the expected values.
TEST_F(ParseConfigTest, ExampleConfigParses) {
  Config config = MustParse(kExampleConfig);
  EXPECT_EQ(config.listen, "127.0.0.1:50051");
  EXPECT_EQ(config.metrics_listen, "127.0.0.1:9464");
  ASSERT_EQ(config.throttles.size(), 1u);
  EXPECT_EQ(config.throttles[0].uid, "api_quota");
  EXPECT_EQ(config.throttles[0].limit, 1000u);
  EXPECT_EQ(config.throttles[0].period_ms, 3'600'000u);
  ASSERT_EQ(config.tenants.size(), 2u);
  EXPECT_EQ(config.tenants[0].name, "default");
  EXPECT_EQ(config.tenants[0].prefix, "default");
  EXPECT_EQ(config.tenants[1].name, "gold");
  EXPECT_EQ(config.tenants[1].backend, "memory");
  EXPECT_EQ(config.tenants[1].prefix, "gold");
  EXPECT_DOUBLE_EQ(config.tenants[1].quota_multiplier, 2.0);
  EXPECT_FALSE(config.tenants[1].allow_inline_specs);
  EXPECT_EQ(config.default_tenant, "default");
}

// Verifies that omitted tenant fields take their defaults (prefix = name).
TEST_F(ParseConfigTest, TenantDefaults) {
  Config config = MustParse("tenants:\n  - name: acme\ndefault_tenant: acme\n");
  ASSERT_EQ(config.tenants.size(), 1u);
  const TenantConfig& t = config.tenants[0];
  EXPECT_EQ(t.name, "acme");
  EXPECT_EQ(t.backend, "memory");
  EXPECT_EQ(t.prefix, "acme");
  EXPECT_DOUBLE_EQ(t.quota_multiplier, 1.0);
  EXPECT_TRUE(t.allow_inline_specs);
}

// Verifies that an empty document yields exactly DefaultConfig().
TEST_F(ParseConfigTest, EmptyDocumentIsDefaults) {
  for (std::string_view yaml : {"", "# only a comment\n", "~\n", "---\n"}) {
    SCOPED_TRACE(yaml);
    Config config = MustParse(yaml);
    Config expected = DefaultConfig();
    EXPECT_EQ(config.listen, expected.listen);
    ASSERT_EQ(config.tenants.size(), 1u);
    EXPECT_EQ(config.tenants[0].name, "default");
    EXPECT_EQ(config.tenants[0].prefix, "default");
    EXPECT_EQ(config.default_tenant, "default");
    EXPECT_TRUE(config.throttles.empty());
  }
}

// Verifies that without a `tenants` key the implicit `default` tenant exists.
TEST_F(ParseConfigTest, ImplicitDefaultTenant) {
  Config config = MustParse("throttles:\n  - {uid: a, limit: 1, period: 1s}\n");
  ASSERT_EQ(config.tenants.size(), 1u);
  EXPECT_EQ(config.tenants[0].name, "default");
  EXPECT_EQ(config.tenants[0].backend, "memory");
  EXPECT_TRUE(config.tenants[0].allow_inline_specs);
  EXPECT_EQ(config.default_tenant, "default");
}

// Verifies the scalar settings, the memory section, IPv6 listen and "" metrics.
TEST_F(ParseConfigTest, AllTopLevelSettings) {
  Config config = MustParse(R"yaml(
listen: "[::1]:0"
metrics_listen: ""
max_identifier_bytes: 128
max_batch_size: 50
shutdown_grace: 1.5s
drain_delay: 0s
memory:
  max_buckets: 42
  sweep_interval: 0ms
)yaml");
  EXPECT_EQ(config.listen, "[::1]:0");
  EXPECT_EQ(config.metrics_listen, "");
  EXPECT_EQ(config.max_identifier_bytes, 128u);
  EXPECT_EQ(config.max_batch_size, 50u);
  EXPECT_EQ(config.shutdown_grace_ms, 1500);
  EXPECT_EQ(config.drain_delay_ms, 0);
  EXPECT_EQ(config.memory.max_buckets, 42u);
  EXPECT_EQ(config.memory.sweep_interval_ms, 0);
}

// Verifies that capacity * period exactly at 2^53 is accepted.
TEST_F(ParseConfigTest, CapacityTimesPeriodAtLimit) {
  Config config = MustParse(R"yaml(
throttles:
  - {uid: big, limit: 4503599627370496, period: 1ms}
tenants:
  - {name: gold, quota_multiplier: 2}
default_tenant: gold
)yaml");
  ASSERT_EQ(config.throttles.size(), 1u);
  EXPECT_EQ(config.throttles[0].limit, uint64_t{1} << 52);
}

// Verifies a tenant on Redis with the `redis:` map and on_backend_error: allow.
TEST_F(ParseConfigTest, RedisTenantWithSettings) {
  Config config = MustParse(R"yaml(
tenants:
  - name: acme
    backend: "redis://:urlpw@cache.internal:6380/2"
    on_backend_error: allow
    redis:
      timeout: 50ms
      connect_timeout: 2s
      pool_size: 8
      username: svc
default_tenant: acme
)yaml");
  ASSERT_EQ(config.tenants.size(), 1u);
  const TenantConfig& t = config.tenants[0];
  EXPECT_EQ(t.backend, "redis://:urlpw@cache.internal:6380/2");
  EXPECT_EQ(t.on_backend_error, BackendErrorPolicy::kAllow);
  ASSERT_TRUE(RedisOf(t).has_value());
  EXPECT_FALSE(RedisOf(t)->cluster);
  ASSERT_EQ(RedisOf(t)->endpoints.size(), 1u);
  EXPECT_EQ(RedisOf(t)->endpoints[0], (RedisEndpoint{"cache.internal", 6380}));
  EXPECT_EQ(RedisOf(t)->db, 2);
  EXPECT_EQ(RedisOf(t)->username, "svc");
  EXPECT_EQ(RedisOf(t)->password, "urlpw");
  EXPECT_EQ(RedisOf(t)->timeout_ms, 50);
  EXPECT_EQ(RedisOf(t)->connect_timeout_ms, 2000);
  EXPECT_EQ(RedisOf(t)->pool_size, 8);
  EXPECT_EQ(RedisOf(t)->Name(), "redis://cache.internal:6380/2");
}

// Verifies that the `redis:` map may come before `backend:` in a tenant.
TEST_F(ParseConfigTest, RedisMapBeforeBackend) {
  Config config = MustParse(R"yaml(
tenants:
  - name: acme
    redis: {pool_size: 3}
    backend: "redis+cluster://n1:7000,n2:7001"
default_tenant: acme
)yaml");
  ASSERT_TRUE(RedisOf(config.tenants[0]).has_value());
  EXPECT_TRUE(RedisOf(config.tenants[0])->cluster);
  EXPECT_EQ(RedisOf(config.tenants[0])->endpoints.size(), 2u);
  EXPECT_EQ(RedisOf(config.tenants[0])->pool_size, 3);
}

// Verifies the defaults of a Redis tenant: deny, 250ms, 1s, pool of 2; and
// that memory tenants have no Redis options.
TEST_F(ParseConfigTest, RedisTenantDefaults) {
  Config config = MustParse(R"yaml(
tenants:
  - {name: acme, backend: "redis://localhost"}
  - {name: mem}
default_tenant: acme
)yaml");
  ASSERT_EQ(config.tenants.size(), 2u);
  const TenantConfig& t = config.tenants[0];
  EXPECT_EQ(t.on_backend_error, BackendErrorPolicy::kDeny);
  ASSERT_TRUE(RedisOf(t).has_value());
  EXPECT_EQ(RedisOf(t)->endpoints[0], (RedisEndpoint{"localhost", 6379}));
  EXPECT_EQ(RedisOf(t)->db, 0);
  EXPECT_EQ(RedisOf(t)->timeout_ms, 250);
  EXPECT_EQ(RedisOf(t)->connect_timeout_ms, 1000);
  EXPECT_EQ(RedisOf(t)->pool_size, 2);
  EXPECT_EQ(RedisOf(t)->username, "");
  EXPECT_EQ(RedisOf(t)->password, "");
  EXPECT_FALSE(RedisOf(config.tenants[1]).has_value());
  EXPECT_EQ(config.tenants[1].on_backend_error, BackendErrorPolicy::kDeny);
  EXPECT_FALSE(RedisOf(DefaultConfig().tenants[0]).has_value());
}

// Verifies on_backend_error on a memory tenant: accepted, deny and allow.
TEST_F(ParseConfigTest, OnBackendErrorValues) {
  Config config = MustParse(R"yaml(
tenants:
  - {name: a, on_backend_error: deny}
  - {name: b, on_backend_error: allow}
default_tenant: a
)yaml");
  EXPECT_EQ(config.tenants[0].on_backend_error, BackendErrorPolicy::kDeny);
  EXPECT_EQ(config.tenants[1].on_backend_error, BackendErrorPolicy::kAllow);
}

// Verifies that password_env reads the password at parse time and overrides
// a password given in the URL.
TEST_F(ParseConfigTest, RedisPasswordEnv) {
  ASSERT_EQ(setenv("TRAFFIK_CONFIG_TEST_REDIS_PW", "from-env", 1), 0);
  Config config = MustParse(R"yaml(
tenants:
  - name: acme
    backend: "redis://:from-url@localhost:6379/0"
    redis:
      username: svc
      password_env: TRAFFIK_CONFIG_TEST_REDIS_PW
default_tenant: acme
)yaml");
  // The factory reads the variable again whenever it parses the settings
  // (at startup and on each reload).
  ASSERT_TRUE(RedisOf(config.tenants[0]).has_value());
  EXPECT_EQ(RedisOf(config.tenants[0])->password, "from-env");
  EXPECT_EQ(RedisOf(config.tenants[0])->username, "svc");
  unsetenv("TRAFFIK_CONFIG_TEST_REDIS_PW");
}

// Verifies the multi-tenant example: enterprise on Redis, free on memory.
TEST_F(ParseConfigTest, MultiTenantRedisAndMemory) {
  Config config = MustParse(R"yaml(
listen: "127.0.0.1:50051"
throttles:
  - uid: api_quota
    limit: 1000
    period: 1h
tenants:
  - name: enterprise
    backend: "redis://127.0.0.1:6379/0"
    on_backend_error: allow
    quota_multiplier: 10
    redis:
      timeout: 100ms
  - name: free
    backend: memory
    prefix: f
default_tenant: free
)yaml");
  ASSERT_EQ(config.tenants.size(), 2u);
  const TenantConfig& enterprise = config.tenants[0];
  EXPECT_EQ(enterprise.name, "enterprise");
  EXPECT_EQ(enterprise.prefix, "enterprise");
  EXPECT_EQ(enterprise.backend, "redis://127.0.0.1:6379/0");
  ASSERT_TRUE(RedisOf(enterprise).has_value());
  EXPECT_EQ(RedisOf(enterprise)->Name(), "redis://127.0.0.1:6379/0");
  EXPECT_EQ(RedisOf(enterprise)->timeout_ms, 100);
  EXPECT_EQ(enterprise.on_backend_error, BackendErrorPolicy::kAllow);
  EXPECT_DOUBLE_EQ(enterprise.quota_multiplier, 10.0);
  const TenantConfig& free = config.tenants[1];
  EXPECT_EQ(free.backend, "memory");
  EXPECT_EQ(free.prefix, "f");
  EXPECT_FALSE(RedisOf(free).has_value());
  EXPECT_EQ(free.on_backend_error, BackendErrorPolicy::kDeny);
  EXPECT_EQ(config.default_tenant, "free");
}

// ---------------------------------------------------------------------------

class DefaultConfigTest : public ::testing::Test {};

// Verifies DefaultConfig: field defaults plus one memory tenant `default`.
TEST_F(DefaultConfigTest, HasDefaultTenant) {
  Config config = DefaultConfig();
  EXPECT_EQ(config.listen, "127.0.0.1:50051");
  EXPECT_EQ(config.metrics_listen, "127.0.0.1:9464");
  EXPECT_TRUE(config.throttles.empty());
  ASSERT_EQ(config.tenants.size(), 1u);
  EXPECT_EQ(config.tenants[0].name, "default");
  EXPECT_EQ(config.tenants[0].backend, "memory");
  EXPECT_EQ(config.tenants[0].prefix, "default");
  EXPECT_DOUBLE_EQ(config.tenants[0].quota_multiplier, 1.0);
  EXPECT_TRUE(config.tenants[0].allow_inline_specs);
  EXPECT_EQ(config.default_tenant, "default");
}

// ---------------------------------------------------------------------------

class ParseDurationMsTest : public ::testing::Test {};

// Verifies valid durations, including fractions and combinations.
TEST_F(ParseDurationMsTest, Valid) {
  struct Case {
    std::string_view text;
    int64_t ms;
  };
  const Case cases[] = {
      {"500ms", 500},
      {"30s", 30'000},
      {"5m", 300'000},
      {"1h", 3'600'000},
      {"2d", 172'800'000},
      {"1h5m30.5s", 3'930'500},
      {"1.5s", 1'500},
      {"0.1s", 100},
      {"0s", 0},
      {"0ms", 0},
      {"1.0005h", 3'601'800},
      {"2.50000000000000000000s", 2'500},
      {"1m1ms", 60'001},
      {"9223372036854775807ms", INT64_MAX},
  };
  for (const Case& c : cases) {
    absl::StatusOr<int64_t> ms = ParseDurationMs(c.text);
    ASSERT_TRUE(ms.ok()) << c.text << ": " << ms.status();
    EXPECT_EQ(*ms, c.ms) << c.text;
  }
}

// Verifies that invalid durations fail with a message naming the problem.
TEST_F(ParseDurationMsTest, Invalid) {
  struct Case {
    std::string_view text;
    std::string_view problem;
  };
  const Case cases[] = {
      {"", "empty"},
      {"30", "missing unit"},
      {"1h30", "missing unit"},
      {"5x", "unknown unit 'x'"},
      {"5sec", "unknown unit 'sec'"},
      {"1.0005s", "not a whole number of milliseconds"},
      {"0.5ms", "not a whole number of milliseconds"},
      {"-5s", "negative"},
      {"5 s", "whitespace"},
      {" 5s", "whitespace"},
      {"s", "expected a number"},
      {"1.s", "digits after '.'"},
      {"9223372036854775808ms", "overflow"},
      {"106751991167301d", "overflow"},
      {"99999999999999999999999999s", "overflow"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<int64_t> ms = ParseDurationMs(c.text);
    ASSERT_FALSE(ms.ok()) << "'" << c.text << "' parsed as " << *ms;
    EXPECT_EQ(ms.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(ms.status().message(), HasSubstr(c.problem)) << c.text;
  }
}

// ---------------------------------------------------------------------------

class ValidateThrottleUidTest : public ::testing::Test {};

// Verifies accepted uids, including the 256-byte maximum and UTF-8.
TEST_F(ValidateThrottleUidTest, Valid) {
  EXPECT_TRUE(ValidateThrottleUid("api_quota").ok());
  EXPECT_TRUE(ValidateThrottleUid("a.b-c/d e").ok());
  EXPECT_TRUE(ValidateThrottleUid("d\xC3\xA9j\xC3\xA0").ok());
  EXPECT_TRUE(ValidateThrottleUid(std::string(256, 'u')).ok());
}

// Verifies rejected uids: empty, too long, control characters, ':', '{', '}'.
TEST_F(ValidateThrottleUidTest, Invalid) {
  struct Case {
    std::string text;
    std::string_view problem;
  };
  const Case cases[] = {
      {"", "empty"},
      {std::string(257, 'u'), "257 bytes"},
      {"a\nb", "control character"},
      {std::string("a\0b", 3), "control character"},
      {"a:b", "':'"},
      {"a{b", "'{'"},
      {"a}b", "'}'"},
  };
  for (const Case& c : cases) {
    absl::Status status = ValidateThrottleUid(c.text);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(status.message(), HasSubstr(c.problem)) << c.text;
  }
}

// ---------------------------------------------------------------------------
// Invalid configurations: each must be kInvalidArgument naming the source, the
// position, the field path and the problem.

class ConfigErrorTest : public ::testing::Test {
 protected:
  // Parses `yaml` as "test.yaml" and checks the error contains every part.
  // A non-empty `secret` must not appear in the message.
  static void ExpectError(std::string_view yaml, const std::vector<std::string>& parts,
                          const std::string& secret = "") {
    absl::StatusOr<Config> config = ParseConfig(yaml, "test.yaml");
    ASSERT_FALSE(config.ok()) << "unexpectedly parsed:\n" << yaml;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr("test.yaml:"));
    for (const std::string& part : parts) {
      EXPECT_THAT(std::string(config.status().message()), HasSubstr(part));
    }
    if (!secret.empty()) {
      EXPECT_THAT(config.status().message(), Not(HasSubstr(secret)));
    }
  }
};

// Verifies that a YAML syntax error is reported with its position.
TEST_F(ConfigErrorTest, NotYaml) {
  ExpectError("listen: [unclosed\n", {"not valid YAML"});
  ExpectError("a: b: c\n", {"test.yaml:1:", "not valid YAML"});
}

// Verifies that the top level must be a map.
TEST_F(ConfigErrorTest, TopLevelNotAMap) {
  ExpectError("- a\n- b\n", {"test.yaml:1:1: top level: expected a map, got a list"});
  ExpectError("just a string\n", {"expected a map"});
}

// Verifies that a second YAML document is rejected instead of ignored.
TEST_F(ConfigErrorTest, MultipleDocuments) {
  ExpectError("listen: \"a:1\"\n---\nlisten: \"b:2\"\n",
              {"test.yaml:2:1: top level: expected a single YAML document"});
}

// Verifies that an empty trailing document is not a second document.
TEST(ConfigDocumentTest, TrailingDocumentMarker) {
  absl::StatusOr<Config> config = ParseConfig("listen: \"127.0.0.1:7\"\n---\n", "t.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen, "127.0.0.1:7");
}

// Verifies that text on which yaml-cpp 0.7's LoadAll never returns (a lone
// ",", found by the config fuzzer; it hung ParseConfig with growing memory) is
// answered at once: yaml-cpp reads it as an empty document, so the default
// configuration applies, as for an empty file.
TEST(ConfigDocumentTest, LoneCommaDoesNotHang) {
  for (const char* text : {",", ",\n,"}) {
    absl::StatusOr<Config> config = ParseConfig(text, "t.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->tenants.size(), DefaultConfig().tenants.size());
  }
}

// Verifies that wrongly typed values name the field and the offending value.
TEST_F(ConfigErrorTest, WrongTypes) {
  ExpectError("throttles:\n  - {uid: a, limit: abc, period: 1s}\n",
              {"throttles[0].limit: expected a positive integer, got 'abc'"});
  ExpectError("throttles:\n  - {uid: a, limit: -5, period: 1s}\n",
              {"throttles[0].limit: expected a positive integer, got '-5'"});
  ExpectError("throttles:\n  - {uid: a, limit: 1.5, period: 1s}\n",
              {"throttles[0].limit: expected a positive integer"});
  ExpectError("throttles: {uid: a}\n", {"throttles: expected a list, got a map"});
  ExpectError("throttles:\n  - just-a-string\n", {"throttles[0]: expected a map"});
  ExpectError("listen: [a, b]\n", {"listen: expected a string, got a list"});
  ExpectError("tenants:\n  - {name: a, allow_inline_specs: yes}\n",
              {"tenants[0].allow_inline_specs: expected a boolean (true or false), "
               "got 'yes'"});
  ExpectError("tenants:\n  - {name: a, quota_multiplier: lots}\n",
              {"tenants[0].quota_multiplier: expected a positive finite number"});
  ExpectError("tenants:\n  - {name: a, quota_multiplier: .inf}\n",
              {"tenants[0].quota_multiplier: expected a positive finite number"});
  ExpectError("memory: 5\n", {"memory: expected a map"});
  ExpectError("max_batch_size:\n",
              {"max_batch_size: expected a positive integer, got null"});
}

// Verifies that unknown keys are rejected at the top level.
TEST_F(ConfigErrorTest, UnknownTopLevelKey) {
  ExpectError("listen: \"127.0.0.1:1\"\nlsiten: x\n",
              {"test.yaml:2:1: top level: unknown key 'lsiten'"});
}

// Verifies that unknown keys are rejected inside a throttle.
TEST_F(ConfigErrorTest, UnknownThrottleKey) {
  ExpectError("throttles:\n  - uid: a\n    limit: 1\n    perod: 1s\n",
              {"test.yaml:4:5: throttles[0]: unknown key 'perod'"});
}

// Verifies that unknown keys are rejected inside a tenant and in `memory`.
TEST_F(ConfigErrorTest, UnknownTenantKey) {
  ExpectError("tenants:\n  - name: a\n    prefx: b\ndefault_tenant: a\n",
              {"tenants[0]: unknown key 'prefx'"});
  ExpectError("memory:\n  max_bucket: 5\n", {"memory: unknown key 'max_bucket'"});
}

// Verifies that a key given twice in one map is rejected.
TEST_F(ConfigErrorTest, DuplicateKey) {
  ExpectError("listen: \"a:1\"\nlisten: \"b:2\"\n", {"duplicate key 'listen'"});
}

// Verifies that missing required throttle and tenant keys are reported.
TEST_F(ConfigErrorTest, MissingRequiredKey) {
  ExpectError("throttles:\n  - {uid: a, limit: 1}\n",
              {"throttles[0]: missing required key 'period'"});
  ExpectError("tenants:\n  - {prefix: p}\n", {"tenants[0]: missing required key 'name'"});
}

// Verifies that a bad duration names the field, the text and the problem.
TEST_F(ConfigErrorTest, BadDuration) {
  ExpectError("throttles:\n  - {uid: a, limit: 1, period: 5x}\n",
              {"throttles[0].period: bad duration '5x': unknown unit 'x'"});
  ExpectError("throttles:\n  - {uid: a, limit: 1, period: 30}\n",
              {"throttles[0].period: bad duration '30': missing unit"});
  ExpectError("throttles:\n  - {uid: a, limit: 1, period: 0s}\n",
              {"throttles[0].period", "out of range: must be 1ms..366d"});
  ExpectError("shutdown_grace: 1.0005s\n",
              {"shutdown_grace: bad duration", "not a whole number of milliseconds"});
  ExpectError("memory:\n  sweep_interval: soon\n",
              {"memory.sweep_interval: bad duration"});
}

// Verifies the values from issue 11 are refused at parse time with the
// position, the field and the accepted range (106800d made the sweeper spin,
// 2^63-1 ms of grace cancelled every call at SIGTERM).
TEST_F(ConfigErrorTest, DurationOutOfRange) {
  ExpectError(
      "memory:\n  sweep_interval: 106800d\n",
      {"test.yaml:2:19: memory.sweep_interval: duration '106800d' is out of range: "
       "must be 0 (off) or 100ms..1h"});
  ExpectError(
      "shutdown_grace: 9223372036854775807ms\n",
      {"test.yaml:1:17: shutdown_grace: duration '9223372036854775807ms' is out of "
       "range: must be 1ms..5m"});
  ExpectError("drain_delay: 9223372036854775807ms\n",
              {"test.yaml:1:14: drain_delay: duration", "must be 0ms..5m"});
  ExpectError("throttles:\n  - {uid: a, limit: 1, period: 9223372036854775807ms}\n",
              {"throttles[0].period: duration", "out of range: must be 1ms..366d"});
}

// Verifies the edges of every duration range: the bounds parse, one
// millisecond beyond does not.
TEST_F(ConfigErrorTest, DurationRangeEdges) {
  const auto parses = [](const std::string& yaml) {
    absl::StatusOr<Config> config = ParseConfig(yaml, "test.yaml");
    EXPECT_TRUE(config.ok()) << yaml << ": " << config.status();
    return config.ok() ? *config : Config();
  };
  EXPECT_EQ(parses("memory:\n  sweep_interval: 0s\n").memory.sweep_interval_ms, 0);
  EXPECT_EQ(parses("memory:\n  sweep_interval: 100ms\n").memory.sweep_interval_ms, 100);
  EXPECT_EQ(parses("memory:\n  sweep_interval: 1h\n").memory.sweep_interval_ms,
            3'600'000);
  ExpectError("memory:\n  sweep_interval: 99ms\n",
              {"memory.sweep_interval", "100ms..1h"});
  ExpectError("memory:\n  sweep_interval: 3600001ms\n",
              {"memory.sweep_interval", "100ms..1h"});
  EXPECT_EQ(parses("shutdown_grace: 1ms\n").shutdown_grace_ms, 1);
  EXPECT_EQ(parses("shutdown_grace: 5m\n").shutdown_grace_ms, 300'000);
  ExpectError("shutdown_grace: 0s\n", {"shutdown_grace", "1ms..5m"});
  ExpectError("shutdown_grace: 300001ms\n", {"shutdown_grace", "1ms..5m"});
  EXPECT_EQ(parses("drain_delay: 0s\n").drain_delay_ms, 0);
  EXPECT_EQ(parses("drain_delay: 5m\n").drain_delay_ms, 300'000);
  ExpectError("drain_delay: 300001ms\n", {"drain_delay", "0ms..5m"});
  EXPECT_EQ(parses("throttles:\n  - {uid: a, limit: 1, period: 366d}\n")
                .throttles.at(0)
                .period_ms,
            uint64_t{366} * 86'400'000);
  ExpectError("throttles:\n  - {uid: a, limit: 1, period: 31622400001ms}\n",
              {"throttles[0].period", "1ms..366d"});
}

// Verifies that the error position is the offending value's line and column.
TEST_F(ConfigErrorTest, LineAndColumn) {
  ExpectError(
      R"yaml(listen: "127.0.0.1:50051"
throttles:
  - uid: ok
    limit: 1
    period: 1s
  - uid: bad
    limit: 1
    period: 5x
)yaml",
      {"test.yaml:8:13: throttles[1].period: bad duration '5x': unknown unit 'x'"});
}

// Verifies that a duplicate throttle uid names the uid and both positions.
TEST_F(ConfigErrorTest, DuplicateThrottleUid) {
  ExpectError(R"yaml(throttles:
  - {uid: api, limit: 1, period: 1s}
  - {uid: other, limit: 1, period: 1s}
  - {uid: api, limit: 2, period: 1m}
)yaml",
              {"test.yaml:4:5: throttles[2]: duplicate throttle uid 'api'",
               "throttles[0], line 2"});
}

// Verifies that duplicate tenant names are rejected.
TEST_F(ConfigErrorTest, DuplicateTenant) {
  ExpectError(
      "tenants:\n  - {name: a, prefix: p1}\n  - {name: a, prefix: p2}\n"
      "default_tenant: a\n",
      {"tenants[1].name: duplicate tenant name 'a'", "tenants[0]"});
}

// Verifies that duplicate prefixes, explicit or defaulted from a name, fail.
TEST_F(ConfigErrorTest, DuplicatePrefix) {
  ExpectError(
      "tenants:\n  - {name: a, prefix: shared}\n  - {name: b, prefix: shared}\n"
      "default_tenant: a\n",
      {"tenants[1].prefix: duplicate prefix 'shared'", "tenant 'a'"});
  ExpectError("tenants:\n  - {name: a}\n  - {name: b, prefix: a}\ndefault_tenant: a\n",
              {"tenants[1].prefix: duplicate prefix 'a'"});
}

// Verifies that prefixes must be non-empty and free of braces and control chars.
TEST_F(ConfigErrorTest, BadPrefix) {
  ExpectError("tenants:\n  - {name: a, prefix: ''}\ndefault_tenant: a\n",
              {"tenants[0].prefix: must not be empty"});
  ExpectError("tenants:\n  - {name: a, prefix: 'x{y}'}\ndefault_tenant: a\n",
              {"tenants[0].prefix", "'{' or '}'"});
  ExpectError("tenants:\n  - {name: 'a{b}'}\ndefault_tenant: 'a{b}'\n",
              {"tenants[0].prefix", "defaulted from the name"});
  ExpectError("tenants:\n  - {name: a, prefix: \"x\\ty\"}\ndefault_tenant: a\n",
              {"tenants[0].prefix", "control character"});
}

// Verifies that an empty tenant name is rejected.
TEST_F(ConfigErrorTest, EmptyTenantName) {
  ExpectError("tenants:\n  - {name: ''}\n", {"tenants[0].name: must not be empty"});
}

// Verifies that a backend other than memory or a Redis URL is rejected, with
// any password in a URL-like value masked.
TEST_F(ConfigErrorTest, UnknownBackend) {
  ExpectError("tenants:\n  - name: default\n    backend: memcached\n",
              {"test.yaml:3:14: tenants[0].backend: unknown backend 'memcached' "
               "(supported: memory, redis://..., redis+cluster://..., rediss://..., "
               "rediss+cluster://...)"});
  ExpectError("tenants:\n  - name: default\n    backend: Memory\n",
              {"unknown backend 'Memory'"});
  ExpectError("tenants:\n  - name: default\n    backend: \"http://u:hunter2@h:1\"\n",
              {"unknown backend 'http://u:***@h:1'"}, "hunter2");
  ExpectError("tenants:\n  - name: default\n    backend: \"memcache://hunter2@h\"\n",
              {"unknown backend 'memcache://***@h'"}, "hunter2");
}

// Verifies that a bad Redis URL is reported at tenants[i].backend without the
// password.
TEST_F(ConfigErrorTest, BadRedisUrl) {
  ExpectError(
      R"yaml(tenants:
  - name: a
  - name: b
    backend: "redis://:hunter2@cache:99999/0"
default_tenant: a
)yaml",
      {"test.yaml:4:14: tenants[1].backend: bad Redis URL: bad port '99999'"}, "hunter2");
  ExpectError(
      "tenants:\n  - {name: a, backend: \"rediss://:hunter2@h:0\"}\n"
      "default_tenant: a\n",
      {"tenants[0].backend", "bad port '0'"}, "hunter2");
  ExpectError(
      "tenants:\n  - {name: a, backend: \"redis://:hunter2@h?db=1\"}\n"
      "default_tenant: a\n",
      {"tenants[0].backend", "query strings"}, "hunter2");
  ExpectError("tenants:\n  - {name: a, backend: \"redis://a,b\"}\ndefault_tenant: a\n",
              {"tenants[0].backend", "redis+cluster://"});
}

// Verifies that a `redis:` map on a memory tenant (explicit or default) fails.
TEST_F(ConfigErrorTest, RedisMapOnMemoryTenant) {
  ExpectError(
      R"yaml(tenants:
  - name: a
  - name: b
    backend: memory
    redis:
      timeout: 1s
default_tenant: a
)yaml",
      {"test.yaml:5:5: tenants[1].redis: only for a Redis backend"});
  ExpectError("tenants:\n  - {name: a, redis: {pool_size: 2}}\ndefault_tenant: a\n",
              {"tenants[0].redis: only for a Redis backend"});
}

// Verifies the checks inside the `redis:` map: ranges, types, unknown keys.
TEST_F(ConfigErrorTest, BadRedisSettings) {
  auto tenant = [](const std::string& redis) {
    return absl::StrCat(
        "tenants:\n  - name: a\n    backend: \"redis://localhost\"\n    redis: ", redis,
        "\ndefault_tenant: a\n");
  };
  ExpectError(tenant("{timeout: 0ms}"),
              {"tenants[0].redis.timeout", "out of range: must be 1ms..1m"});
  ExpectError(tenant("{timeout: 5x}"),
              {"tenants[0].redis.timeout: bad duration '5x': unknown unit 'x'"});
  ExpectError(tenant("{connect_timeout: 0s}"),
              {"tenants[0].redis.connect_timeout", "out of range: must be 1ms..1m"});
  ExpectError(tenant("{pool_size: 0}"),
              {"tenants[0].redis.pool_size: must be between 1 and 64, got 0"});
  ExpectError(tenant("{pool_size: 65}"),
              {"tenants[0].redis.pool_size: must be between 1 and 64, got 65"});
  ExpectError(tenant("{pool_size: many}"),
              {"tenants[0].redis.pool_size: expected a positive integer"});
  ExpectError(tenant("{username: [a]}"),
              {"tenants[0].redis.username: expected a string, got a list"});
  ExpectError(tenant("{password: x}"), {"tenants[0].redis: unknown key 'password'",
                                        "timeout, connect_timeout, pool_size, "
                                        "username, password_env"});
  ExpectError(tenant("5"), {"tenants[0].redis: expected a map, got '5'"});
  ExpectError(tenant(""), {"tenants[0].redis: expected a map, got null"});
  ExpectError(tenant("{timeout: 1s, timeout: 2s}"), {"duplicate key 'timeout'"});
  ExpectError(tenant("{password_env: ''}"),
              {"tenants[0].redis.password_env: expected an environment variable name"});
  ExpectError(tenant("{username: svc}"),
              {"tenants[0].redis.username: a username needs a password"});
}

// Verifies that password_env naming an unset variable is an error at the field.
TEST_F(ConfigErrorTest, RedisPasswordEnvUnset) {
  unsetenv("TRAFFIK_CONFIG_TEST_UNSET_PW");
  ExpectError(R"yaml(tenants:
  - name: a
    backend: "redis://localhost"
    redis:
      password_env: TRAFFIK_CONFIG_TEST_UNSET_PW
default_tenant: a
)yaml",
              {"test.yaml:5:21: tenants[0].redis.password_env: environment variable "
               "'TRAFFIK_CONFIG_TEST_UNSET_PW' is not set"});
}

// Verifies that password_env naming an empty variable is rejected, and that
// the password from the URL never appears in such errors.
TEST_F(ConfigErrorTest, RedisPasswordEnvEmpty) {
  ASSERT_EQ(setenv("TRAFFIK_CONFIG_TEST_EMPTY_PW", "", 1), 0);
  ExpectError(R"yaml(tenants:
  - name: a
    backend: "redis://:hunter2@localhost"
    redis: {password_env: TRAFFIK_CONFIG_TEST_EMPTY_PW}
default_tenant: a
)yaml",
              {"tenants[0].redis.password_env: environment variable "
               "'TRAFFIK_CONFIG_TEST_EMPTY_PW' is empty"},
              "hunter2");
  unsetenv("TRAFFIK_CONFIG_TEST_EMPTY_PW");
}

// Verifies that on_backend_error accepts only allow or deny.
TEST_F(ConfigErrorTest, BadOnBackendError) {
  ExpectError("tenants:\n  - {name: a, on_backend_error: open}\ndefault_tenant: a\n",
              {"tenants[0].on_backend_error: expected 'allow' or 'deny', got 'open'"});
  ExpectError("tenants:\n  - {name: a, on_backend_error: [allow]}\ndefault_tenant: a\n",
              {"tenants[0].on_backend_error: expected 'allow' or 'deny', got a list"});
}

// Verifies that the prefix rules still apply across Redis and memory tenants.
TEST_F(ConfigErrorTest, DuplicatePrefixAcrossBackends) {
  ExpectError(R"yaml(tenants:
  - {name: a, backend: "redis://localhost", prefix: p}
  - {name: b, prefix: p}
default_tenant: a
)yaml",
              {"tenants[1].prefix: duplicate prefix 'p'", "tenant 'a'"});
}

// Verifies that default_tenant must name a defined tenant.
TEST_F(ConfigErrorTest, DefaultTenantUnknown) {
  ExpectError("default_tenant: nobody\n",
              {"test.yaml:1:17: default_tenant: unknown tenant 'nobody'"});
  ExpectError("tenants:\n  - {name: gold}\n",
              {"default_tenant: unknown tenant 'default'", "gold"});
}

// Verifies that a present but empty tenant list is rejected.
TEST_F(ConfigErrorTest, EmptyTenantList) {
  ExpectError("tenants: []\n", {"tenants: must list at least one tenant"});
}

// Verifies that limit 0 is rejected.
TEST_F(ConfigErrorTest, LimitZero) {
  ExpectError("throttles:\n  - {uid: a, limit: 0, period: 1s}\n",
              {"throttles[0].limit: must be >= 1, got 0"});
}

// Verifies that uids with ':' or '{' are rejected with the field path.
TEST_F(ConfigErrorTest, BadUidCharacters) {
  ExpectError("throttles:\n  - {uid: 'a:b', limit: 1, period: 1s}\n",
              {"throttles[0].uid: throttle uid 'a:b' contains ':'"});
  ExpectError("throttles:\n  - {uid: 'a{b', limit: 1, period: 1s}\n",
              {"throttles[0].uid: throttle uid 'a{b' contains '{'"});
}

// Verifies that a zero or negative quota_multiplier is rejected.
TEST_F(ConfigErrorTest, BadMultiplier) {
  ExpectError(
      "tenants:\n  - {name: default, quota_multiplier: 0}\n",
      {"tenants[0].quota_multiplier: expected a positive finite number, got '0'"});
  ExpectError("tenants:\n  - {name: default, quota_multiplier: -1.5}\n",
              {"tenants[0].quota_multiplier: expected a positive finite number, got "
               "'-1.5'"});
}

// Verifies that capacity * period above 2^53 is rejected, per tenant multiplier.
TEST_F(ConfigErrorTest, LimitTimesPeriodTooLarge) {
  ExpectError("throttles:\n  - {uid: a, limit: 9007199254740992, period: 2ms}\n",
              {"throttles[0]: limit * period too large for tenant 'default'", "2^53"});
  // Just above 2^53 with a 1ms period: must not be rounded into range.
  ExpectError("throttles:\n  - {uid: a, limit: 9007199254740993, period: 1ms}\n",
              {"throttles[0]: limit * period too large for tenant 'default'"});
  // Fine for multiplier 1, too large once gold's multiplier 3 applies.
  ExpectError(
      R"yaml(throttles:
  - {uid: a, limit: 4503599627370496, period: 1ms}
tenants:
  - {name: default}
  - {name: gold, quota_multiplier: 3}
)yaml",
      {"test.yaml:2:5: throttles[0]: limit * period too large for tenant 'gold'"});
}

// Verifies range checks on the numeric top-level settings.
TEST_F(ConfigErrorTest, NumericRanges) {
  ExpectError("max_identifier_bytes: 0\n", {"max_identifier_bytes: must be between 1"});
  ExpectError("max_identifier_bytes: 1048577\n", {"max_identifier_bytes"});
  ExpectError("max_batch_size: 100001\n",
              {"max_batch_size: must be between 1 and 100000"});
  ExpectError("memory:\n  max_buckets: 0\n", {"memory.max_buckets: must be >= 1"});
  ExpectError("throttles:\n  - {uid: a, limit: 99999999999999999999, period: 1s}\n",
              {"throttles[0].limit", "too large"});
}

// Verifies that listen addresses must be host:port.
TEST_F(ConfigErrorTest, BadListenAddress) {
  ExpectError("listen: localhost\n", {"listen: expected host:port, got 'localhost'"});
  ExpectError("listen: \":50051\"\n", {"listen: expected host:port", "empty host"});
  ExpectError("listen: \"host:65536\"\n", {"listen", "port must be 0-65535"});
  ExpectError("listen: \"::1:50051\"\n", {"listen", "brackets"});
  ExpectError("metrics_listen: \"host:\"\n", {"metrics_listen: expected host:port"});
  ExpectError("listen: \"\"\n", {"listen: expected host:port"});
}

// ---------------------------------------------------------------------------

class LoadConfigFileTest : public ::testing::Test {
 protected:
  static std::string TempPath(std::string_view name) {
    return absl::StrCat(::testing::TempDir(), "/traffik_config_test_", getpid(), "_",
                        std::string(name));
  }
};

// Verifies that a missing file is kNotFound naming the path.
TEST_F(LoadConfigFileTest, MissingFile) {
  std::string path = TempPath("does_not_exist.yaml");
  absl::StatusOr<Config> config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
  EXPECT_THAT(config.status().message(), HasSubstr("no such file"));
}

// Verifies that a real file is read and parsed.
TEST_F(LoadConfigFileTest, ReadsFile) {
  std::string path = TempPath("example.yaml");
  {
    std::ofstream out(path);
    out << kExampleConfig;
  }
  absl::StatusOr<Config> config = LoadConfigFile(path);
  unlink(path.c_str());
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->throttles.size(), 1u);
  EXPECT_EQ(config->throttles[0].period_ms, 3'600'000u);
  EXPECT_EQ(config->tenants.size(), 2u);
}

// Verifies that parse errors from a file name the file path as the source.
TEST_F(LoadConfigFileTest, ErrorsNameThePath) {
  std::string path = TempPath("bad.yaml");
  {
    std::ofstream out(path);
    out << "listen: \"127.0.0.1:1\"\nbogus: 1\n";
  }
  absl::StatusOr<Config> config = LoadConfigFile(path);
  unlink(path.c_str());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(),
              HasSubstr(absl::StrCat(path, ":2:1: top level: unknown key 'bogus'")));
}

// Verifies that a directory is kInvalidArgument naming the path.
TEST_F(LoadConfigFileTest, Directory) {
  std::string path = TempPath("dir");
  ASSERT_EQ(mkdir(path.c_str(), 0700), 0);
  absl::StatusOr<Config> config = LoadConfigFile(path);
  rmdir(path.c_str());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

// Verifies that an unreadable file is kPermissionDenied (skipped as root).
TEST_F(LoadConfigFileTest, Unreadable) {
  if (geteuid() == 0) GTEST_SKIP() << "root can read any file";
  std::string path = TempPath("unreadable.yaml");
  {
    std::ofstream out(path);
    out << kExampleConfig;
  }
  chmod(path.c_str(), 0);
  absl::StatusOr<Config> config = LoadConfigFile(path);
  unlink(path.c_str());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

// ---------------------------------------------------------------------------
// The memory budget and the tenants' shares of it.

// Verifies memory.max_bytes: the default, plain bytes and the KiB/MiB/GiB
// suffixes.
TEST_F(ParseConfigTest, MemoryMaxBytes) {
  EXPECT_EQ(DefaultConfig().memory.max_bytes, uint64_t{256} << 20);
  EXPECT_EQ(MustParse("listen: \"127.0.0.1:1\"\n").memory.max_bytes, uint64_t{256} << 20);
  const std::pair<std::string, uint64_t> cases[] = {
      {"1", 1},
      {"1048576", 1 << 20},
      {"3KiB", 3 << 10},
      {"64MiB", uint64_t{64} << 20},
      {"2GiB", uint64_t{2} << 30},
      {"17179869183GiB", uint64_t{17179869183} << 30},
      {"18446744073709551615", 18446744073709551615u},
  };
  for (const auto& [text, bytes] : cases) {
    EXPECT_EQ(
        MustParse(absl::StrCat("memory:\n  max_bytes: ", text, "\n")).memory.max_bytes,
        bytes)
        << text;
  }
}

// Verifies the memory tenants' shares: an own share where written, an equal
// part of what is left for the others, nothing for Redis tenants.
TEST_F(ParseConfigTest, MemoryShares) {
  Config config = MustParse(R"yaml(
memory:
  max_bytes: 100MiB
  max_buckets: 1000
tenants:
  - name: default
  - name: gold
    memory:
      max_bytes: 40MiB
      max_buckets: 700
  - name: silver
    memory: {max_buckets: 100}
  - name: remote
    backend: redis://127.0.0.1:6379
)yaml");
  ASSERT_EQ(config.tenants.size(), 4u);
  EXPECT_EQ(config.tenants[1].memory.max_bytes, uint64_t{40} << 20);
  EXPECT_EQ(config.tenants[1].memory.max_buckets, 700u);
  EXPECT_FALSE(config.tenants[2].memory.max_bytes.has_value());
  const MemoryShareConfig def = MemoryShareOf(config, config.tenants[0]);
  EXPECT_EQ(def.max_bytes, uint64_t{30} << 20);  // (100 - 40) / 2
  EXPECT_EQ(def.max_buckets, 200u);              // 1000 - 700 - 100
  const MemoryShareConfig gold = MemoryShareOf(config, config.tenants[1]);
  EXPECT_EQ(gold.max_bytes, uint64_t{40} << 20);
  EXPECT_EQ(gold.max_buckets, 700u);
  const MemoryShareConfig silver = MemoryShareOf(config, config.tenants[2]);
  EXPECT_EQ(silver.max_bytes, uint64_t{30} << 20);
  EXPECT_EQ(silver.max_buckets, 100u);
  // One memory tenant (the default config): the whole budget.
  const Config defaults = DefaultConfig();
  EXPECT_EQ(MemoryShareOf(defaults, defaults.tenants[0]).max_bytes,
            defaults.memory.max_bytes);
  EXPECT_EQ(MemoryShareOf(defaults, defaults.tenants[0]).max_buckets,
            defaults.memory.max_buckets);
}

// Verifies bad byte sizes are rejected with file:line:col, field and problem:
// wrong type, no digits, unknown units, 0 and overflow.
TEST_F(ConfigErrorTest, BadMemoryMaxBytes) {
  ExpectError("memory:\n  max_bytes: [1]\n",
              {"test.yaml:2:14: memory.max_bytes: expected a size in bytes such as "
               "'256MiB'",
               "got a list"});
  ExpectError("memory:\n  max_bytes: lots\n",
              {"test.yaml:2:14: memory.max_bytes: expected a size in bytes", "'lots'"});
  ExpectError("memory:\n  max_bytes: -5\n", {"memory.max_bytes: expected a size"});
  ExpectError("memory:\n  max_bytes: 256MB\n",
              {"test.yaml:2:14: memory.max_bytes: bad size '256MB': unknown unit 'MB'"});
  ExpectError("memory:\n  max_bytes: 256 MiB\n", {"unknown unit ' MiB'"});
  ExpectError("memory:\n  max_bytes: 1.5GiB\n", {"unknown unit '.5GiB'"});
  ExpectError("memory:\n  max_bytes: 2mib\n", {"unknown unit 'mib'"});
  ExpectError("memory:\n  max_bytes: 0\n",
              {"test.yaml:2:14: memory.max_bytes: size '0' must be at least 1 byte"});
  ExpectError("memory:\n  max_bytes: 0GiB\n", {"must be at least 1 byte"});
  ExpectError("memory:\n  max_bytes: 18446744073709551616\n",
              {"memory.max_bytes: size '18446744073709551616' is too large"});
  ExpectError("memory:\n  max_bytes: 17179869184GiB\n", {"is too large"});
  ExpectError("memory:\n  max_bytes:\n", {"memory.max_bytes: expected a size", "null"});
}

// Verifies tenants' memory shares are checked: known keys and types only,
// memory tenants only, own shares within the budget, and an equal part of at
// least 1 for the others.
TEST_F(ConfigErrorTest, BadMemoryShares) {
  ExpectError("tenants:\n  - {name: a, memory: {max_bytes: 0}}\n",
              {"tenants[0].memory.max_bytes: size '0' must be at least 1 byte"});
  ExpectError("tenants:\n  - {name: a, memory: {max_buckets: 0}}\n",
              {"tenants[0].memory.max_buckets: must be >= 1"});
  ExpectError("tenants:\n  - {name: a, memory: {buckets: 5}}\n",
              {"tenants[0].memory: unknown key 'buckets'"});
  ExpectError("tenants:\n  - {name: a, memory: 5}\n",
              {"tenants[0].memory: expected a map"});
  ExpectError(
      "tenants:\n  - name: a\n    memory: {max_buckets: 5}\n    backend: "
      "redis://127.0.0.1\n",
      {"test.yaml:3:5: tenants[0].memory: only for the memory backend"});
  ExpectError(R"yaml(memory:
  max_bytes: 100MiB
tenants:
  - name: a
    memory: {max_bytes: 60MiB}
  - name: b
    memory: {max_bytes: 50MiB}
default_tenant: a
)yaml",
              {"test.yaml:7:25: tenants[1].memory.max_bytes: the memory tenants' own "
               "shares add up to 115343360 bytes by this one, more than "
               "memory.max_bytes (104857600 bytes)"});
  ExpectError(
      R"yaml(tenants:
  - name: a
    memory: {max_buckets: 1000000}
  - name: b
default_tenant: a
)yaml",
      {"memory.max_buckets: 0 buckets left by the tenants' own shares cannot give "
       "each of the 1 memory tenants without one a share of at least 1"});
  ExpectError(R"yaml(memory:
  max_buckets: 3
tenants:
  - name: a
  - name: b
  - name: c
  - name: d
default_tenant: a
)yaml",
              {"test.yaml:2:16: memory.max_buckets: 3 buckets left by the tenants' own "
               "shares cannot give each of the 4 memory tenants"});
  ExpectError(R"yaml(memory: {max_bytes: 18446744073709551615}
tenants:
  - name: a
    memory: {max_bytes: 18446744073709551615}
  - name: b
    memory: {max_bytes: 18446744073709551615}
default_tenant: a
)yaml",
              {"tenants[1].memory.max_bytes: the memory tenants' own shares add up to "
               "more than 2^64 bytes"});
}

}  // namespace
}  // namespace traffik
