// RedisKeyScan (backend/redis/key_scan.h) driven through a fake command sink
// with replies decoded by hiredis' own reader: the order of commands, the
// filtering, the UNLINK batches per hash slot and the error handling, with no
// redis-server.

#include "backend/redis/key_scan.h"

#include <hiredis/hiredis.h>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backend/redis/key_slot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::ElementsAre;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

Reply Parse(const std::string& resp) {
  redisReader* reader = redisReaderCreate();
  redisReaderFeed(reader, resp.data(), resp.size());
  void* reply = nullptr;
  EXPECT_EQ(redisReaderGetReply(reader, &reply), REDIS_OK) << resp;
  redisReaderFree(reader);
  EXPECT_NE(reply, nullptr) << resp;
  return Reply(static_cast<redisReply*>(reply));
}

std::string Bulk(const std::string& s) {
  return absl::StrCat("$", s.size(), "\r\n", s, "\r\n");
}

// A SCAN reply: the next cursor and the keys of the page.
std::string ScanReply(const std::string& cursor, const std::vector<std::string>& keys) {
  std::string out = absl::StrCat("*2\r\n", Bulk(cursor), "*", keys.size(), "\r\n");
  for (const std::string& k : keys) out += Bulk(k);
  return out;
}

// Records the commands the scan sends and answers them on demand.
class FakeSink {
 public:
  RedisCommandSink sink() {
    return [this](RedisCommand command, RedisReplyCallback reply) {
      sent_.push_back(command);
      pending_.push_back(std::move(reply));
    };
  }
  // Answers the oldest unanswered command with `resp` (RESP text).
  void Answer(const std::string& resp, const std::string& host = "10.0.0.1") {
    ASSERT_FALSE(pending_.empty());
    RedisReplyCallback reply = std::move(pending_.front());
    pending_.pop_front();
    Reply r = Parse(resp);
    std::move(reply)(static_cast<const redisReply*>(r.get()), host);
  }
  void Fail(absl::Status status) {
    ASSERT_FALSE(pending_.empty());
    RedisReplyCallback reply = std::move(pending_.front());
    pending_.pop_front();
    std::move(reply)(status, "");
  }
  const std::vector<RedisCommand>& sent() const { return sent_; }
  size_t pending() const { return pending_.size(); }

 private:
  std::vector<RedisCommand> sent_;
  std::deque<RedisReplyCallback> pending_;
};

BucketSelector Selector(const std::string& prefix) {
  BucketSelector s;
  s.key_prefix = prefix;
  s.matches = [](absl::string_view key) {
    return key.find("skip") == absl::string_view::npos;
  };
  return s;
}

// Verifies a standalone scan: SCAN with the escaped prefix until cursor 0,
// only the keys the selector accepts unlinked after each page, the counts
// summed.
TEST(RedisKeyScanTest, StandalonePages) {
  FakeSink fake;
  std::optional<absl::StatusOr<uint64_t>> result;
  RedisKeyScan::Run(fake.sink(), /*cluster=*/false, Selector("t*:"),
                    [&](absl::StatusOr<uint64_t> n) { result = n; });
  ASSERT_EQ(fake.sent().size(), 1u);
  EXPECT_THAT(fake.sent()[0].args,
              ElementsAre("SCAN", "0", "MATCH", "t\\*:*", "COUNT", "1000"));
  EXPECT_EQ(fake.sent()[0].node, "");
  fake.Answer(ScanReply("17", {"t*:a", "t*:skip", "other", "t*:b"}));
  ASSERT_EQ(fake.sent().size(), 2u);
  EXPECT_THAT(fake.sent()[1].args, ElementsAre("UNLINK", "t*:a", "t*:b"));
  EXPECT_TRUE(fake.sent()[1].keyed);
  fake.Answer(":2\r\n");
  ASSERT_EQ(fake.sent().size(), 3u);
  EXPECT_THAT(fake.sent()[2].args,
              ElementsAre("SCAN", "17", "MATCH", "t\\*:*", "COUNT", "1000"));
  fake.Answer(ScanReply("0", {}));  // an empty last page
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok()) << result->status();
  EXPECT_EQ(**result, 2u);
  EXPECT_EQ(fake.pending(), 0u);
}

// Verifies a cluster scan asks CLUSTER SLOTS, scans each master (by address,
// the answering node's host filling an empty one) and unlinks per hash slot,
// at most kRedisUnlinkBatch keys per UNLINK.
TEST(RedisKeyScanTest, ClusterMastersAndSlots) {
  FakeSink fake;
  std::optional<absl::StatusOr<uint64_t>> result;
  RedisKeyScan::Run(fake.sink(), /*cluster=*/true, Selector("p:"),
                    [&](absl::StatusOr<uint64_t> n) { result = n; });
  ASSERT_EQ(fake.sent().size(), 1u);
  EXPECT_THAT(fake.sent()[0].args, ElementsAre("CLUSTER", "SLOTS"));
  fake.Answer(
      "*3\r\n"
      "*3\r\n:0\r\n:8000\r\n*2\r\n$0\r\n\r\n:7001\r\n"
      "*3\r\n:8001\r\n:16383\r\n*2\r\n$9\r\n127.0.0.2\r\n:7002\r\n"
      "*3\r\n:9000\r\n:9001\r\n*2\r\n$9\r\n127.0.0.2\r\n:7002\r\n",
      "127.0.0.9");
  ASSERT_EQ(fake.sent().size(), 2u);
  EXPECT_EQ(fake.sent()[1].node, "127.0.0.9:7001");
  // One page: 501 keys of one slot and 1 of another.
  std::vector<std::string> keys;
  for (int i = 0; i < 501; ++i) keys.push_back(absl::StrCat("p:u:{same}#", i + 1, "/1"));
  keys.push_back("p:u:{other}");
  ASSERT_NE(RedisKeySlot("p:u:{same}"), RedisKeySlot("p:u:{other}"));
  fake.Answer(ScanReply("0", keys));
  ASSERT_EQ(fake.sent().size(), 5u);  // 500 + 1 of one slot, 1 of the other
  size_t unlinked = 0;
  for (size_t i = 2; i < 5; ++i) {
    EXPECT_EQ(fake.sent()[i].args[0], "UNLINK");
    EXPECT_LE(fake.sent()[i].args.size(), 1 + kRedisUnlinkBatch);
    const int slot = RedisKeySlot(fake.sent()[i].args[1]);
    for (size_t k = 1; k < fake.sent()[i].args.size(); ++k) {
      EXPECT_EQ(RedisKeySlot(fake.sent()[i].args[k]), slot);
    }
    unlinked += fake.sent()[i].args.size() - 1;
  }
  EXPECT_EQ(unlinked, 502u);
  fake.Answer(":500\r\n");
  fake.Answer(":1\r\n");
  EXPECT_EQ(fake.sent().size(), 5u);  // waits for every UNLINK of the page
  fake.Answer(":1\r\n");
  ASSERT_EQ(fake.sent().size(), 6u);
  EXPECT_EQ(fake.sent()[5].node, "127.0.0.2:7002");  // listed once
  fake.Answer(ScanReply("0", {}));
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok());
  EXPECT_EQ(**result, 502u);
}

// Verifies the first error ends the scan: answered once, nothing more sent,
// later replies ignored; a malformed SCAN reply is INTERNAL.
TEST(RedisKeyScanTest, ErrorsEndTheScan) {
  FakeSink fake;
  int answers = 0;
  absl::Status error;
  RedisKeyScan::Run(fake.sink(), false, Selector("p:"), [&](absl::StatusOr<uint64_t> n) {
    ++answers;
    error = n.status();
  });
  fake.Answer(ScanReply("5", {"p:a", "p:b"}));
  ASSERT_EQ(fake.sent().size(), 2u);
  fake.Fail(absl::UnavailableError("redis: lost connection"));
  EXPECT_EQ(answers, 1);
  EXPECT_EQ(error.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake.sent().size(), 2u);

  FakeSink bad;
  RedisKeyScan::Run(bad.sink(), false, Selector("p:"), [&](absl::StatusOr<uint64_t> n) {
    ++answers;
    error = n.status();
  });
  bad.Answer(":3\r\n");
  EXPECT_EQ(answers, 2);
  EXPECT_EQ(error.code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace traffik
