#include "redis/redis_harness.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace traffik::testing_redis {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The status message as a std::string (Debian's absl::string_view is not
// std::string_view, and gMock's string matchers want std::string).
std::string Message(const absl::Status& status) { return std::string(status.message()); }

// ------------------------------------------------------------- free helpers

// Verifies FreeLoopbackPort returns a port in the valid range.
TEST(FreeLoopbackPortTest, ReturnsUsablePort) {
  const int port = FreeLoopbackPort();
  EXPECT_GT(port, 0);
  EXPECT_LE(port, 65535);
}

// Verifies KeySlot matches known CLUSTER KEYSLOT values and honours hash tags.
TEST(KeySlotTest, MatchesRedisClusterSpec) {
  EXPECT_EQ(KeySlot("123456789"), 0x31C3);  // the CRC16/XMODEM check value
  EXPECT_EQ(KeySlot("foo"), 12182);
  EXPECT_EQ(KeySlot("bar"), 5061);
  EXPECT_EQ(KeySlot("{user1000}.following"), KeySlot("user1000"));
  EXPECT_EQ(KeySlot("{user1000}.followers"), KeySlot("{user1000}.following"));
  EXPECT_NE(KeySlot("foo{}{bar}"), KeySlot("bar"));  // empty first tag: whole key
  EXPECT_EQ(KeySlot("foo{{bar}}zap"), KeySlot("{bar"));
}

// ------------------------------------------------------------- RedisServer

class RedisServerTest : public ::testing::Test {
 protected:
  std::unique_ptr<RedisServer> StartOrDie(RedisServer::Options options = {}) {
    absl::StatusOr<std::unique_ptr<RedisServer>> server = RedisServer::Start(options);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(*server) : nullptr;
  }
};

// Verifies a started server answers PING/SET/GET and renders each reply type.
TEST_F(RedisServerTest, StartsAndAnswersCommands) {
  std::unique_ptr<RedisServer> server = StartOrDie();
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->IsRunning());
  EXPECT_EQ(server->address(), absl::StrCat("127.0.0.1:", server->port()));
  EXPECT_EQ(server->url(), absl::StrCat("redis://127.0.0.1:", server->port(), "/0"));

  EXPECT_EQ(server->Command({"PING"}).value_or("?"), "PONG");
  EXPECT_EQ(server->Command({"SET", "k", "v w"}).value_or("?"), "OK");
  EXPECT_EQ(server->Command({"GET", "k"}).value_or("?"), "v w");
  EXPECT_EQ(server->Command({"GET", "missing"}).value_or("?"), "(nil)");
  EXPECT_EQ(server->Command({"INCRBY", "n", "41"}).value_or("?"), "41");
  EXPECT_EQ(server->Command({"RPUSH", "l", "a", "b"}).value_or("?"), "2");
  EXPECT_EQ(server->Command({"LRANGE", "l", "0", "-1"}).value_or("?"), "a\nb");
  EXPECT_EQ(server->Command({"MGET", "k", "missing"}).value_or("?"), "v w\n(nil)");

  absl::StatusOr<std::string> wrong_type = server->Command({"INCR", "l"});
  EXPECT_EQ(wrong_type.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(wrong_type.status()), StartsWith("WRONGTYPE"));
  EXPECT_EQ(server->Command({}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Verifies Kill + Restart brings the server back on the same port with no data.
TEST_F(RedisServerTest, KillAndRestartKeepsPortAndDropsData) {
  std::unique_ptr<RedisServer> server = StartOrDie();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  const pid_t first_pid = server->pid();
  ASSERT_EQ(server->Command({"SET", "k", "v"}).value_or("?"), "OK");

  server->Kill();
  EXPECT_FALSE(server->IsRunning());
  EXPECT_EQ(server->pid(), -1);
  EXPECT_EQ(server->Command({"PING"}).status().code(), absl::StatusCode::kUnavailable);

  ASSERT_TRUE(server->Restart().ok()) << server->LogText();
  EXPECT_TRUE(server->IsRunning());
  EXPECT_EQ(server->port(), port);
  EXPECT_NE(server->pid(), first_pid);
  EXPECT_EQ(server->Command({"GET", "k"}).value_or("?"), "(nil)");
  EXPECT_EQ(server->Command({"DBSIZE"}).value_or("?"), "0");
}

// Verifies Stop terminates the server gracefully and Restart works after it.
TEST_F(RedisServerTest, StopThenRestart) {
  std::unique_ptr<RedisServer> server = StartOrDie();
  ASSERT_NE(server, nullptr);
  server->Stop();
  EXPECT_FALSE(server->IsRunning());
  EXPECT_EQ(server->Command({"PING"}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(server->LogText(), HasSubstr("ready to exit"));
  ASSERT_TRUE(server->Restart().ok());
  EXPECT_EQ(server->Command({"PING"}).value_or("?"), "PONG");
}

// Verifies requirepass: commands without AUTH fail with NOAUTH, a wrong
// password fails, and Command() authenticates by itself.
TEST_F(RedisServerTest, RequirepassRequiresAuth) {
  RedisServer::Options options;
  options.requirepass = "s3cret";
  std::unique_ptr<RedisServer> server = StartOrDie(options);
  ASSERT_NE(server, nullptr);

  absl::StatusOr<std::string> unauthenticated = server->CommandNoAuth({"GET", "k"});
  EXPECT_EQ(unauthenticated.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(unauthenticated.status()), HasSubstr("NOAUTH"));

  absl::StatusOr<std::string> wrong = server->CommandNoAuth({"AUTH", "nope"});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(wrong.status()), HasSubstr("WRONGPASS"));

  EXPECT_EQ(server->CommandNoAuth({"AUTH", "s3cret"}).value_or("?"), "OK");
  EXPECT_EQ(server->Command({"SET", "k", "v"}).value_or("?"), "OK");
  EXPECT_EQ(server->Command({"GET", "k"}).value_or("?"), "v");
  EXPECT_THAT(server->url(), ::testing::Not(HasSubstr("s3cret")));
}

// Verifies an explicit port is used as given.
TEST_F(RedisServerTest, UsesExplicitPort) {
  RedisServer::Options options;
  options.port = FreeLoopbackPort();
  ASSERT_GT(options.port, 0);
  std::unique_ptr<RedisServer> server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->port(), options.port);
  EXPECT_EQ(server->Command({"PING"}).value_or("?"), "PONG");
}

// Verifies a port held by another server makes Start fail with kUnavailable
// instead of talking to the wrong process.
TEST_F(RedisServerTest, TakenExplicitPortFails) {
  std::unique_ptr<RedisServer> first = StartOrDie();
  ASSERT_NE(first, nullptr);
  RedisServer::Options options;
  options.port = first->port();
  absl::StatusOr<std::unique_ptr<RedisServer>> second = RedisServer::Start(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(first->Command({"PING"}).value_or("?"), "PONG");
}

// Verifies the destructor kills the process and removes the temp dir.
TEST_F(RedisServerTest, DestructorCleansUp) {
  std::unique_ptr<RedisServer> server = StartOrDie();
  ASSERT_NE(server, nullptr);
  const std::string dir = server->dir();
  const pid_t pid = server->pid();
  const int port = server->port();
  ASSERT_TRUE(std::filesystem::exists(dir));
  server.reset();
  EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_NE(kill(pid, 0), 0);  // reaped, so the pid is gone
  RedisServer::Options options;
  options.port = port;  // and the port is free again
  EXPECT_TRUE(RedisServer::Start(options).ok());
}

// ------------------------------------------------------------ RedisCluster

class RedisClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RedisCluster>> cluster = RedisCluster::Start(3);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = std::move(*cluster);
  }

  std::unique_ptr<RedisCluster> cluster_;
};

// Verifies a 3-node cluster comes up healthy on every node, with a seeds URL,
// and KeySlot agrees with the server's CLUSTER KEYSLOT.
TEST_F(RedisClusterTest, StartsHealthy) {
  ASSERT_EQ(cluster_->size(), 3);
  std::set<int> ports;
  std::set<std::string> ids;
  for (int i = 0; i < cluster_->size(); ++i) {
    absl::StatusOr<std::string> info = cluster_->node(i).Command({"CLUSTER", "INFO"});
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_THAT(*info, HasSubstr("cluster_state:ok"));
    EXPECT_THAT(*info, HasSubstr("cluster_known_nodes:3"));
    ports.insert(cluster_->node(i).port());
    ids.insert(cluster_->node_id(i));
    EXPECT_EQ(cluster_->node_id(i).size(), 40u);
  }
  EXPECT_EQ(ports.size(), 3u);
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(cluster_->seeds_url(),
            absl::StrCat("redis+cluster://", cluster_->node(0).address(), ",",
                         cluster_->node(1).address(), ",", cluster_->node(2).address()));
  for (const std::string key :
       {"a", "foo", "{tenant}:x", "traffik:{t1}:k", "foo{}{bar}", "foo{{bar}}zap"}) {
    EXPECT_EQ(cluster_->node(0).Command({"CLUSTER", "KEYSLOT", key}).value_or("?"),
              absl::StrCat(KeySlot(key)))
        << key;
  }
}

// Verifies keys with different hash tags land on different nodes, each key is
// stored on the node NodeForKey names, other nodes answer MOVED, and
// KeysPerNode counts them.
TEST_F(RedisClusterTest, KeysSpreadAcrossNodes) {
  std::vector<int> count(3, 0);
  std::set<int> owners;
  for (int i = 0; i < 30; ++i) {
    const std::string key = absl::StrCat("{tag", i, "}:bucket");
    absl::StatusOr<int> owner = cluster_->NodeForKey(key);
    ASSERT_TRUE(owner.ok()) << owner.status();
    owners.insert(*owner);
    ++count[*owner];
    ASSERT_EQ(cluster_->node(*owner).Command({"SET", key, "1"}).value_or("?"), "OK");
    const int other = (*owner + 1) % 3;
    absl::StatusOr<std::string> moved = cluster_->node(other).Command({"GET", key});
    EXPECT_THAT(Message(moved.status()),
                StartsWith(absl::StrCat("MOVED ", KeySlot(key), " ",
                                        cluster_->node(*owner).address())));
  }
  EXPECT_EQ(owners.size(), 3u);
  absl::StatusOr<std::vector<int64_t>> per_node = cluster_->KeysPerNode();
  ASSERT_TRUE(per_node.ok()) << per_node.status();
  EXPECT_EQ(*per_node, (std::vector<int64_t>{count[0], count[1], count[2]}));
}

// Verifies MigrateSlot moves a slot and its keys: the new owner serves them,
// the old owner answers MOVED, and NodeForKey reports the new owner.
TEST_F(RedisClusterTest, MigrateSlotMovesKeys) {
  const std::string key = "{moving}:a";
  const std::string sibling = "{moving}:b";
  const int slot = KeySlot(key);
  absl::StatusOr<int> from = cluster_->NodeForKey(key);
  ASSERT_TRUE(from.ok()) << from.status();
  const int to = (*from + 1) % cluster_->size();
  ASSERT_EQ(cluster_->node(*from).Command({"SET", key, "va"}).value_or("?"), "OK");
  ASSERT_EQ(cluster_->node(*from).Command({"SET", sibling, "vb"}).value_or("?"), "OK");

  absl::Status migrated = cluster_->MigrateSlot(slot, *from, to);
  ASSERT_TRUE(migrated.ok()) << migrated;

  EXPECT_EQ(cluster_->node(to).Command({"GET", key}).value_or("?"), "va");
  EXPECT_EQ(cluster_->node(to).Command({"GET", sibling}).value_or("?"), "vb");
  absl::StatusOr<std::string> old_owner = cluster_->node(*from).Command({"GET", key});
  EXPECT_EQ(old_owner.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      Message(old_owner.status()),
      StartsWith(absl::StrCat("MOVED ", slot, " ", cluster_->node(to).address())));
  EXPECT_EQ(cluster_->NodeForKey(key).value_or(-1), to);
  for (int i = 0; i < cluster_->size(); ++i) {
    EXPECT_EQ(cluster_->node(i)
                  .Command({"CLUSTER", "COUNTKEYSINSLOT", absl::StrCat(slot)})
                  .value_or("?"),
              i == to ? "2" : "0")
        << "node " << i;
  }
  EXPECT_EQ(cluster_->MigrateSlot(slot, to, to).code(),
            absl::StatusCode::kInvalidArgument);
}

// Verifies a killed cluster node restarts on its port with its node id and
// slots (nodes.conf survives) and the cluster becomes healthy again.
TEST_F(RedisClusterTest, KilledNodeRejoinsAfterRestart) {
  const std::string id = cluster_->node_id(1);
  cluster_->node(1).Kill();
  ASSERT_TRUE(cluster_->node(1).Restart().ok()) << cluster_->node(1).LogText();
  EXPECT_EQ(cluster_->node(1).Command({"CLUSTER", "MYID"}).value_or("?"), id);
  EXPECT_THAT(cluster_->node(1).Command({"CLUSTER", "INFO"}).value_or("?"),
              HasSubstr("cluster_slots_assigned:16384"));
}

}  // namespace
}  // namespace traffik::testing_redis
