// RedisBackend over TLS (rediss://, rediss+cluster://) against real
// redis-server processes listening with --tls-port, with certificates from a
// throwaway CA made by the test (testing_redis::TestPki); and the `redis.tls`
// settings as the configuration parses them.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "backend/redis/redis_backend.h"
#include "backend/redis/redis_factory.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "redis/backend_sync.h"
#include "redis/redis_harness.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing_redis::AllOrNothingSync;
using testing_redis::BatchSync;
using testing_redis::DecideSync;
using testing_redis::RedisCluster;
using testing_redis::RedisServer;
using testing_redis::RedisServerTls;
using testing_redis::TestPki;

// Waits (bounded) until `backend` answers a decision without error; the last
// answer otherwise.
absl::Status WaitUntilServing(Backend& backend, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  absl::Status last = absl::DeadlineExceededError("never tried");
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<Decision> d = DecideSync(backend, "probe:{x}", Rate{1000, 1000});
    if (d.ok()) return absl::OkStatus();
    last = d.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return last;
}

// Lines of `text` containing `needle`.
int CountLines(const std::string& text, const std::string& needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StrContains(line, needle)) ++n;
  }
  return n;
}

class RedisTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pki = TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = pki->release();
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(pki_, nullptr); }

  static RedisServerTls ServerTls(bool auth_clients = false) {
    RedisServerTls tls;
    tls.cert_file = pki_->server_cert_file();
    tls.key_file = pki_->server_key_file();
    tls.ca_file = pki_->ca_file();
    tls.auth_clients = auth_clients;
    return tls;
  }

  void StartServer(bool auth_clients = false) {
    RedisServer::Options options;
    options.tls = ServerTls(auth_clients);
    auto server = RedisServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // rediss:// to the server's TLS port, trusting the test CA.
  RedisOptions TlsOptions() const {
    absl::StatusOr<RedisOptions> options = ParseRedisUrl(server_->tls_url());
    EXPECT_TRUE(options.ok()) << options.status();
    options->timeout_ms = 500;
    options->tls_options.ca_file = pki_->ca_file();
    return *options;
  }

  std::unique_ptr<RedisBackend> MustCreate(const RedisOptions& options) {
    auto backend = RedisBackend::Create(options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? *std::move(backend) : nullptr;
  }

  // Decisions keep failing with UNAVAILABLE for ~1 s (several reconnect
  // attempts) and say `why`; the backend's log names it exactly once.
  void ExpectRefused(const RedisOptions& options, const std::string& why) {
    ::testing::internal::CaptureStderr();
    {
      std::unique_ptr<RedisBackend> backend = MustCreate(options);
      ASSERT_NE(backend, nullptr);
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      int answers = 0;
      while (std::chrono::steady_clock::now() < until) {
        absl::StatusOr<Decision> d = DecideSync(*backend, "refused:{k}", Rate{5, 60'000});
        ++answers;
        ASSERT_EQ(d.status().code(), absl::StatusCode::kUnavailable) << d.status();
        EXPECT_THAT(std::string(d.status().message()), HasSubstr(options.Name()));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      EXPECT_GT(answers, 10);
      EXPECT_FALSE(backend->connected());
      absl::StatusOr<Decision> last =
          DecideSync(*backend, "refused:{k}", Rate{5, 60'000});
      EXPECT_THAT(std::string(last.status().message()), HasSubstr(why));
    }
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(CountLines(log, why), 1) << log;
    EXPECT_EQ(CountLines(log, "cannot connect to 127.0.0.1:"), 1) << log;
    EXPECT_EQ(*server_->Command({"EXISTS", "refused:{k}"}), "0");
  }

  static TestPki* pki_;
  std::unique_ptr<RedisServer> server_;
};
TestPki* RedisTlsTest::pki_ = nullptr;

// Verifies single decisions over rediss:// (the certificate checked against
// the test CA and the URL's IP address) reach the server's buckets.
TEST_F(RedisTlsTest, SingleDecisions) {
  StartServer();
  std::unique_ptr<RedisBackend> backend = MustCreate(TlsOptions());
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
  EXPECT_TRUE(backend->connected());
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<Decision> d = DecideSync(*backend, "single:{k}", Rate{5, 60'000});
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE(d->allowed) << i;
  }
  absl::StatusOr<Decision> denied = DecideSync(*backend, "single:{k}", Rate{5, 60'000});
  ASSERT_TRUE(denied.ok()) << denied.status();
  EXPECT_FALSE(denied->allowed);
  EXPECT_EQ(*server_->Command({"EXISTS", "single:{k}"}), "1");
}

// Verifies a pipelined batch over TLS answers every item in order, and that
// many concurrent callers are served exactly (the limit, no more).
TEST_F(RedisTlsTest, BatchAndConcurrency) {
  StartServer();
  std::unique_ptr<RedisBackend> backend = MustCreate(TlsOptions());
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
  std::vector<BucketOp> ops;
  for (int i = 0; i < 4; ++i) ops.push_back(BucketOp{"batch:{a}", Rate{3, 60'000}, 1});
  ops.push_back(BucketOp{"batch:{b}", Rate{1, 60'000}, 1});
  absl::StatusOr<std::vector<Decision>> result = BatchSync(*backend, ops);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->size(), 5u);
  EXPECT_TRUE((*result)[0].allowed);
  EXPECT_TRUE((*result)[1].allowed);
  EXPECT_TRUE((*result)[2].allowed);
  EXPECT_FALSE((*result)[3].allowed);
  EXPECT_TRUE((*result)[4].allowed);

  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        absl::StatusOr<Decision> d = DecideSync(*backend, "race:{k}", Rate{100, 60'000});
        if (d.ok() && d->allowed) allowed.fetch_add(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(allowed.load(), 100);
}

// Verifies all-or-nothing over TLS: a batch with one item over its limit
// takes nothing; a batch within its limits takes everything.
TEST_F(RedisTlsTest, AllOrNothing) {
  StartServer();
  std::unique_ptr<RedisBackend> backend = MustCreate(TlsOptions());
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
  absl::StatusOr<AllOrNothingResult> refused =
      AllOrNothingSync(*backend, {BucketOp{"aon:{u}:a", Rate{5, 60'000}, 2},
                                  BucketOp{"aon:{u}:b", Rate{1, 60'000}, 2}});
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->applied);
  EXPECT_EQ(*server_->Command({"EXISTS", "aon:{u}:a"}), "0");
  absl::StatusOr<AllOrNothingResult> applied =
      AllOrNothingSync(*backend, {BucketOp{"aon:{u}:a", Rate{5, 60'000}, 2},
                                  BucketOp{"aon:{u}:b", Rate{1, 60'000}, 1}});
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_TRUE(applied->applied);
  ASSERT_EQ(applied->decisions.size(), 2u);
  EXPECT_EQ(applied->decisions[0].remaining, 3u);
  EXPECT_EQ(applied->decisions[1].remaining, 0u);
}

// Verifies AUTH and SELECT run over the TLS connection after the handshake.
TEST_F(RedisTlsTest, AuthAndSelect) {
  RedisServer::Options server_options;
  server_options.tls = ServerTls();
  server_options.requirepass = "s3cret";
  auto server = RedisServer::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  RedisOptions options = TlsOptions();
  options.password = "s3cret";
  options.db = 2;
  std::unique_ptr<RedisBackend> backend = MustCreate(options);
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
  ASSERT_TRUE(DecideSync(*backend, "db:{k}", Rate{5, 60'000}).ok());
  EXPECT_EQ(*server_->Command(
                {"EVAL", "redis.call('SELECT', 2) return redis.call('EXISTS', KEYS[1])",
                 "1", "db:{k}"}),
            "1");
}

// Verifies a server whose certificate another CA signed is refused: every
// decision fails with UNAVAILABLE saying why, one log line says so (not one
// per attempt), nothing reaches Redis.
TEST_F(RedisTlsTest, WrongCaRefused) {
  StartServer();
  RedisOptions options = TlsOptions();
  options.tls_options.ca_file = pki_->other_ca_file();
  ExpectRefused(options, "TLS handshake failed: certificate verify failed");
}

// Verifies the server's name is checked: a server_name its certificate does
// not carry is refused; the name it carries (a DNS SAN, sent as SNI) works.
TEST_F(RedisTlsTest, WrongServerNameRefused) {
  StartServer();
  RedisOptions options = TlsOptions();
  options.tls_options.server_name = "other.test";
  ExpectRefused(options, "certificate verify failed: hostname mismatch");

  options.tls_options.server_name = "redis.test";
  std::unique_ptr<RedisBackend> backend = MustCreate(options);
  ASSERT_NE(backend, nullptr);
  EXPECT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
}

// Verifies an IP address name is checked against the IP SANs: an address the
// certificate does not list is refused. (The server binds 127.0.0.1 only, so
// the address comes from server_name, checked the same way as a URL's host.)
TEST_F(RedisTlsTest, IpNotInCertificateRefused) {
  StartServer();
  RedisOptions options = TlsOptions();
  options.tls_options.server_name = "127.0.0.2";
  ExpectRefused(options, "certificate verify failed: IP address mismatch");
}

// Verifies insecure_skip_verify connects to a server neither the CA nor the
// name would accept, and warns once when the backend starts.
TEST_F(RedisTlsTest, InsecureSkipVerify) {
  StartServer();
  RedisOptions options = TlsOptions();
  options.tls_options.ca_file = pki_->other_ca_file();
  options.tls_options.server_name = "other.test";
  options.tls_options.insecure_skip_verify = true;
  ::testing::internal::CaptureStderr();
  std::unique_ptr<RedisBackend> backend = MustCreate(options);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(CountLines(log, "insecure_skip_verify"), 1) << log;
  EXPECT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
}

// Verifies a server with tls-auth-clients refuses us without a client
// certificate, and serves us with cert_file/key_file.
TEST_F(RedisTlsTest, ClientCertificate) {
  StartServer(/*auth_clients=*/true);
  RedisOptions without = TlsOptions();
  ::testing::internal::CaptureStderr();
  {
    std::unique_ptr<RedisBackend> backend = MustCreate(without);
    ASSERT_NE(backend, nullptr);
    absl::Status status = WaitUntilServing(*backend, std::chrono::milliseconds(1000));
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_FALSE(backend->connected());
  }
  // TLS 1.3 completes our side of the handshake before the server checks for
  // a certificate: the refusal (an alert, or the connection reset) must still
  // count as a failed connect, logged once per distinct reason, never as
  // "connected" followed by "lost connection" on every attempt.
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(CountLines(log, "connected to"), 0) << log;
  EXPECT_EQ(CountLines(log, "lost connection"), 0) << log;
  EXPECT_GE(CountLines(log, "cannot connect to"), 1) << log;
  EXPECT_LE(CountLines(log, "cannot connect to"), 2) << log;
  RedisOptions with = TlsOptions();
  with.tls_options.cert_file = pki_->client_cert_file();
  with.tls_options.key_file = pki_->client_key_file();
  std::unique_ptr<RedisBackend> backend = MustCreate(with);
  ASSERT_NE(backend, nullptr);
  EXPECT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
  EXPECT_TRUE(DecideSync(*backend, "mtls:{k}", Rate{5, 60'000}).ok());
  EXPECT_EQ(*server_->Command({"EXISTS", "mtls:{k}"}), "1");
}

// Verifies a TLS backend reconnects (new handshake) after the server restarts.
TEST_F(RedisTlsTest, ReconnectsAfterRestart) {
  StartServer();
  std::unique_ptr<RedisBackend> backend = MustCreate(TlsOptions());
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
  server_->Kill();
  EXPECT_EQ(DecideSync(*backend, "r:{k}", Rate{5, 60'000}).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(server_->Restart().ok());
  EXPECT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(5)).ok());
}

// Verifies a bad TLS file fails the backend's creation, naming the field.
TEST_F(RedisTlsTest, BadFilesFailCreate) {
  StartServer();
  RedisOptions options = TlsOptions();
  options.tls_options.ca_file = pki_->dir() + "/missing.pem";
  auto backend = RedisBackend::Create(options);
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(backend.status().message()), HasSubstr("tls.ca_file"));
  options = TlsOptions();
  options.tls_options.cert_file = pki_->client_cert_file();
  options.tls_options.key_file = pki_->server_key_file();  // not the cert's key
  backend = RedisBackend::Create(options);
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(backend.status().message()), HasSubstr("tls.key_file"));
}

// ---------------------------------------------------------------- cluster

class RedisTlsClusterTest : public RedisTlsTest {
 protected:
  static void SetUpTestSuite() {
    RedisTlsTest::SetUpTestSuite();
    if (pki_ == nullptr) return;
    auto cluster = RedisCluster::Start(3, ServerTls());
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    RedisTlsTest::TearDownTestSuite();
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  RedisOptions ClusterOptions() const {
    absl::StatusOr<RedisOptions> options = ParseRedisUrl(cluster_->tls_seeds_url());
    EXPECT_TRUE(options.ok()) << options.status();
    options->timeout_ms = 500;
    options->tls_options.ca_file = pki_->ca_file();
    return *options;
  }

  static RedisCluster* cluster_;
};
RedisCluster* RedisTlsClusterTest::cluster_ = nullptr;

// Verifies rediss+cluster://: keys spread over every node land on their
// owners (CLUSTER SLOTS answered with the TLS ports), and a slot moved to
// another node is followed through MOVED to that node's TLS port, each node
// checked against the seed's name (127.0.0.1, an IP SAN).
TEST_F(RedisTlsClusterTest, DecisionsAndMovedAcrossTlsNodes) {
  std::unique_ptr<RedisBackend> backend = MustCreate(ClusterOptions());
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(10)).ok());
  std::vector<int> per_node(3, 0);
  for (int i = 0; i < 30; ++i) {
    const std::string key = absl::StrCat("c:{user", i, "}");
    absl::StatusOr<Decision> d = DecideSync(*backend, key, Rate{5, 60'000});
    ASSERT_TRUE(d.ok()) << d.status();
    absl::StatusOr<int> owner = cluster_->NodeForKey(key);
    ASSERT_TRUE(owner.ok()) << owner.status();
    EXPECT_EQ(*cluster_->node(*owner).Command({"EXISTS", key}), "1") << key;
    ++per_node[*owner];
  }
  for (int n : per_node) EXPECT_GT(n, 0);

  // An empty slot handed to another node: the backend's map still names the
  // old owner, which answers MOVED.
  const std::string key = "moved:{tls-slot}";
  const int slot = testing_redis::KeySlot(key);
  absl::StatusOr<int> from = cluster_->NodeForSlot(slot);
  ASSERT_TRUE(from.ok()) << from.status();
  const int to = (*from + 1) % cluster_->size();
  for (int i = 0; i < cluster_->size(); ++i) {
    ASSERT_TRUE(cluster_->node(i)
                    .Command({"CLUSTER", "SETSLOT", absl::StrCat(slot), "NODE",
                              cluster_->node_id(to)})
                    .ok());
  }
  absl::StatusOr<Decision> d = DecideSync(*backend, key, Rate{5, 60'000});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*cluster_->node(to).Command({"EXISTS", key}), "1");
  EXPECT_THAT(
      std::string(cluster_->node(*from).Command({"EXISTS", key}).status().message()),
      HasSubstr("MOVED"));
}

// Verifies Reset (SCAN + UNLINK on every master, each addressed by the TLS
// port CLUSTER SLOTS names) over TLS: buckets on all nodes are removed, others
// stay.
TEST_F(RedisTlsClusterTest, ResetScansEveryMaster) {
  std::unique_ptr<RedisBackend> backend = MustCreate(ClusterOptions());
  ASSERT_NE(backend, nullptr);
  ASSERT_TRUE(WaitUntilServing(*backend, std::chrono::seconds(10)).ok());
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(
        DecideSync(*backend, absl::StrCat("tlsreset:{user", i, "}"), Rate{5, 60'000})
            .ok());
    ASSERT_TRUE(
        DecideSync(*backend, absl::StrCat("tlskeep:{user", i, "}"), Rate{5, 60'000})
            .ok());
  }
  auto reset = [&](const std::string& prefix) -> absl::StatusOr<uint64_t> {
    BucketSelector selector;
    selector.key_prefix = prefix;
    selector.matches = [prefix](absl::string_view key) {
      return absl::StartsWith(key, prefix);
    };
    std::promise<absl::StatusOr<uint64_t>> promise;
    backend->Reset(nullptr, std::move(selector),
                   [&promise](absl::StatusOr<uint64_t> n) { promise.set_value(n); });
    return promise.get_future().get();
  };
  absl::StatusOr<uint64_t> removed = reset("tlsreset:");
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 60u);
  EXPECT_EQ(*reset("tlsreset:"), 0u);
  EXPECT_EQ(*reset("tlskeep:"), 60u);
}

// Verifies the cluster's nodes are checked too: a wrong server_name is
// refused by every node (UNAVAILABLE), with the seeds named.
TEST_F(RedisTlsClusterTest, WrongServerNameRefused) {
  RedisOptions options = ClusterOptions();
  options.tls_options.server_name = "other.test";
  std::unique_ptr<RedisBackend> backend = MustCreate(options);
  ASSERT_NE(backend, nullptr);
  absl::Status status = WaitUntilServing(*backend, std::chrono::milliseconds(700));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("hostname mismatch"));
  EXPECT_FALSE(backend->connected());
}

// ---------------------------------------------------------------- config

class RedisTlsConfigTest : public RedisTlsTest {
 protected:
  absl::StatusOr<Config> Parse(const std::string& backend_url,
                               const std::string& tls_yaml) {
    return ParseConfig(
        absl::StrCat("tenants:\n  - name: a\n    backend: \"", backend_url,
                     "\"\n    redis:\n      tls: ", tls_yaml, "\ndefault_tenant: a\n"),
        "test.yaml");
  }
  void ExpectError(const std::string& url, const std::string& tls_yaml,
                   const std::vector<std::string>& parts) {
    SCOPED_TRACE(tls_yaml);
    absl::StatusOr<Config> config = Parse(url, tls_yaml);
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& part : parts) {
      EXPECT_THAT(std::string(config.status().message()), HasSubstr(part));
    }
  }
};

// Verifies a full `redis.tls` map is parsed into the tenant's options.
TEST_F(RedisTlsConfigTest, ParsesSettings) {
  absl::StatusOr<Config> config = Parse(
      "rediss://cache:6380/1",
      absl::StrCat("{ca_file: '", pki_->ca_file(), "', cert_file: '",
                   pki_->client_cert_file(), "', key_file: '", pki_->client_key_file(),
                   "', server_name: redis.test, insecure_skip_verify: false}"));
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<RedisOptions> options =
      ParseRedisSpec(config->tenants[0].backend_spec, YamlReader("test.yaml"));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->tls);
  EXPECT_EQ(options->tls_options.ca_file, pki_->ca_file());
  EXPECT_EQ(options->tls_options.cert_file, pki_->client_cert_file());
  EXPECT_EQ(options->tls_options.key_file, pki_->client_key_file());
  EXPECT_EQ(options->tls_options.server_name, "redis.test");
  EXPECT_FALSE(options->tls_options.insecure_skip_verify);
  EXPECT_EQ(options->TlsName(), "redis.test");
  EXPECT_EQ(options->Name(), "rediss://cache:6380/1");
}

// Verifies each bad `redis.tls` setting is an error at its field, at load.
TEST_F(RedisTlsConfigTest, ErrorsNameTheField) {
  const std::string missing = pki_->dir() + "/missing.pem";
  ExpectError("redis://cache", "{}",
              {"tenants[0].redis.tls", "need a rediss:// or rediss+cluster://"});
  ExpectError("rediss://cache", absl::StrCat("{ca_file: '", missing, "'}"),
              {"test.yaml:5:", "tenants[0].redis.tls.ca_file: cannot read",
               "No such file or directory"});
  ExpectError("rediss://cache",
              absl::StrCat("{ca_file: '", pki_->dir() + "/openssl.log", "'}"),
              {"tenants[0].redis.tls.ca_file: cannot load CA certificates"});
  ExpectError("rediss://cache",
              absl::StrCat("{cert_file: '", pki_->client_cert_file(), "'}"),
              {"tenants[0].redis.tls.cert_file: needs key_file"});
  ExpectError("rediss://cache",
              absl::StrCat("{key_file: '", pki_->client_key_file(), "'}"),
              {"tenants[0].redis.tls.key_file: needs cert_file"});
  ExpectError("rediss://cache",
              absl::StrCat("{cert_file: '", pki_->client_cert_file(), "', key_file: '",
                           pki_->server_key_file(), "'}"),
              {"tenants[0].redis.tls.key_file", "does not match the certificate"});
  ExpectError("rediss://cache",
              absl::StrCat("{cert_file: '", pki_->client_key_file(), "', key_file: '",
                           pki_->client_key_file(), "'}"),
              {"tenants[0].redis.tls.cert_file: cannot load a PEM certificate"});
  ExpectError("rediss://cache", "{insecure_skip_verify: maybe}",
              {"tenants[0].redis.tls.insecure_skip_verify"});
  ExpectError("rediss://cache", "{server_name: 'a b'}",
              {"tenants[0].redis.tls.server_name: expected a host name"});
  ExpectError("rediss://cache", "{ca_file: ''}",
              {"tenants[0].redis.tls.ca_file: must not be empty"});
  ExpectError("rediss://cache", "{verify: no}",
              {"tenants[0].redis.tls: unknown key 'verify'"});
  ExpectError("rediss://cache", "5", {"tenants[0].redis.tls: expected a map"});
}

// Verifies a file that is not readable is refused at load (not at the
// first connection).
TEST_F(RedisTlsConfigTest, UnreadableFileRefused) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads any file";
  const std::string path = pki_->dir() + "/unreadable.pem";
  { std::ofstream(path) << "x"; }
  chmod(path.c_str(), 0);
  ExpectError("rediss://cache", absl::StrCat("{ca_file: '", path, "'}"),
              {"tenants[0].redis.tls.ca_file: cannot read", "Permission denied"});
}

}  // namespace
}  // namespace traffik
