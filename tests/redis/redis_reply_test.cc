// The pure parts of the Redis backend (script_reply.h, cluster_topology.h),
// fed replies decoded by hiredis' own reader from RESP bytes: no redis-server.

#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <vector>

#include "backend/redis/cluster_topology.h"
#include "backend/redis/key_slot.h"
#include "backend/redis/script_reply.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// The one reply `resp` encodes (RESP2, as Redis sends it).
Reply Parse(const std::string& resp) {
  redisReader* reader = redisReaderCreate();
  redisReaderFeed(reader, resp.data(), resp.size());
  void* reply = nullptr;
  const int rc = redisReaderGetReply(reader, &reply);
  redisReaderFree(reader);
  EXPECT_EQ(rc, REDIS_OK) << resp;
  EXPECT_NE(reply, nullptr) << "incomplete: " << resp;
  return Reply(static_cast<redisReply*>(reply));
}

std::string Ints(const std::vector<long long>& values) {
  std::string out = "*" + std::to_string(values.size()) + "\r\n";
  for (long long v : values) out += ":" + std::to_string(v) + "\r\n";
  return out;
}

BucketOp Item(uint64_t capacity) {
  BucketOp op;
  op.key = "k";
  op.rate.capacity = capacity;
  op.rate.period_ms = 1000;
  op.cost = 1;
  return op;
}

// Verifies a well-formed bucket script reply becomes the decision it encodes.
TEST(ScriptReplyTest, DecodesDecision) {
  const std::optional<Decision> d =
      DecodeDecisionReply(*Parse(Ints({0, 250, 3, 900})), 10);
  ASSERT_TRUE(d.has_value());
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->wait_ms, 250u);
  EXPECT_EQ(d->limit, 10u);
  EXPECT_EQ(d->remaining, 3u);
  EXPECT_EQ(d->reset_ms, 900u);
  const std::optional<Decision> allowed =
      DecodeDecisionReply(*Parse(Ints({1, 0, 9, 100})), 10);
  ASSERT_TRUE(allowed.has_value());
  EXPECT_TRUE(allowed->allowed);
}

// Verifies any other shape of reply is refused, not half-decoded.
TEST(ScriptReplyTest, RejectsMalformedDecision) {
  for (const std::string& resp :
       {Ints({1, 0, 9}),                                       // too short
        Ints({1, 0, 9, 100, 5}),                               // too long
        Ints({1, -1, 9, 100}),                                 // negative
        std::string("*4\r\n:1\r\n:0\r\n$1\r\n9\r\n:100\r\n"),  // a string
        std::string("*4\r\n:1\r\n:0\r\n*0\r\n:100\r\n"),       // nested
        std::string("-ERR boom\r\n"), std::string(":1\r\n"), std::string("$-1\r\n"),
        std::string("*-1\r\n"), std::string("+OK\r\n")}) {
    EXPECT_FALSE(DecodeDecisionReply(*Parse(resp), 10).has_value()) << resp;
  }
}

// The integers as RESP elements (no array header), for a flat reply.
std::string Elements(const std::vector<long long>& values) {
  std::string out;
  for (long long v : values) out += ":" + std::to_string(v) + "\r\n";
  return out;
}

// Verifies the each script's flat reply decodes item by item: a decision (4
// integers), a peek (6: its hit), an item's error (one error element, kept and
// truncated), each decision with its item's capacity as its limit.
TEST(ScriptReplyTest, DecodesEachReply) {
  const std::vector<RedisEachItem> items = {
      {5, false}, {7, true}, {9, false}, {3, false}};
  const Reply reply =
      Parse("*15\r\n" + Elements({1, 0, 4, 200}) + Elements({0, 7, 0, 900, 0, 800}) +
            "-WRONGTYPE Operation against a key\r\n" + Elements({0, 5, 0, 300}));
  std::optional<std::vector<RedisEachAnswer>> a = DecodeEachReply(*reply, items);
  ASSERT_TRUE(a.has_value());
  ASSERT_EQ(a->size(), 4u);
  ASSERT_TRUE((*a)[0].decision.has_value());
  EXPECT_TRUE((*a)[0].decision->allowed);
  EXPECT_EQ((*a)[0].decision->limit, 5u);
  EXPECT_EQ((*a)[0].decision->remaining, 4u);
  EXPECT_EQ((*a)[0].decision->reset_ms, 200u);
  ASSERT_TRUE((*a)[1].decision.has_value());
  EXPECT_FALSE((*a)[1].decision->allowed);
  EXPECT_EQ((*a)[1].decision->limit, 7u);
  EXPECT_EQ((*a)[1].decision->wait_ms, 7u);
  EXPECT_EQ((*a)[1].decision->reset_ms, 900u);
  EXPECT_FALSE((*a)[2].decision.has_value());
  EXPECT_EQ((*a)[2].error, "WRONGTYPE Operation against a key");
  ASSERT_TRUE((*a)[3].decision.has_value());
  EXPECT_EQ((*a)[3].decision->wait_ms, 5u);
  EXPECT_EQ((*a)[3].decision->limit, 3u);

  // One item alone: the bucket script's own reply shapes.
  a = DecodeEachReply(*Parse(Ints({1, 0, 4, 200})), {{{5, false}}});
  ASSERT_TRUE(a.has_value() && (*a)[0].decision.has_value());
  EXPECT_EQ((*a)[0].decision->remaining, 4u);
  const std::string long_error(1000, 'E');
  a = DecodeEachReply(*Parse("*1\r\n-" + long_error + "\r\n"), {{{5, true}}});
  ASSERT_TRUE(a.has_value());
  EXPECT_FALSE((*a)[0].decision.has_value());
  EXPECT_EQ((*a)[0].error.size(), kMaxEachErrorBytes);
}

// Verifies an each reply of any other shape is refused as a whole: too few or
// too many elements for the items' modes, a negative or non-integer element
// where an item's integers are due, a nested entry, no array at all.
TEST(ScriptReplyTest, RefusesMalformedEachReply) {
  const std::vector<RedisEachItem> two = {{5, false}, {5, false}};
  EXPECT_TRUE(DecodeEachReply(*Parse(Ints({1, 0, 4, 200, 1, 0, 3, 300})), two));
  for (const std::string& resp :
       {Ints({1, 0, 4, 200, 1, 0, 3}), Ints({1, 0, 4, 200, 1, 0, 3, 300, 1}),
        Ints({1, 0, 4, 200, 1, -1, 3, 300}), Ints({}),
        "*8\r\n" + Elements({1, 0, 4, 200, 1, 0}) + "+OK\r\n:300\r\n",
        "*8\r\n" + Elements({1, 0, 4, 200, 1, 0, 3}) + "$-1\r\n",
        "*2\r\n" + Ints({1, 0, 4, 200}) + Ints({1, 0, 3, 300}),
        std::string("-ERR boom\r\n"), std::string(":1\r\n")}) {
    EXPECT_FALSE(DecodeEachReply(*Parse(resp), two).has_value()) << resp;
  }
  // A decision's 4 integers where a peek's 6 are due, and the reverse.
  EXPECT_FALSE(DecodeEachReply(*Parse(Ints({1, 0, 4, 200})), {{{5, true}}}));
  EXPECT_FALSE(DecodeEachReply(*Parse(Ints({1, 0, 4, 200, 4, 200})), {{{5, false}}}));
}

// Verifies an all-or-nothing reply gives `applied` and each item's decision
// with that item's capacity as its limit.
TEST(ScriptReplyTest, DecodesAllOrNothing) {
  const std::vector<BucketOp> items = {Item(5), Item(7)};
  const std::optional<AllOrNothingResult> r =
      DecodeAllOrNothingReply(*Parse(Ints({0, 1, 0, 4, 200, 0, 30, 0, 1000})), items);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->applied);
  ASSERT_EQ(r->decisions.size(), 2u);
  EXPECT_TRUE(r->decisions[0].allowed);
  EXPECT_EQ(r->decisions[0].limit, 5u);
  EXPECT_EQ(r->decisions[0].remaining, 4u);
  EXPECT_EQ(r->decisions[0].reset_ms, 200u);
  EXPECT_FALSE(r->decisions[1].allowed);
  EXPECT_EQ(r->decisions[1].wait_ms, 30u);
  EXPECT_EQ(r->decisions[1].limit, 7u);
  EXPECT_EQ(r->decisions[1].reset_ms, 1000u);
}

// Verifies an all-or-nothing reply whose length does not match the items, or
// with a non-integer or negative element, is refused.
TEST(ScriptReplyTest, RejectsMalformedAllOrNothing) {
  const std::vector<BucketOp> items = {Item(5), Item(7)};
  EXPECT_FALSE(DecodeAllOrNothingReply(*Parse(Ints({1, 1, 0, 4, 200})), items));
  EXPECT_FALSE(
      DecodeAllOrNothingReply(*Parse(Ints({1, 1, 0, 4, 200, 1, 0, 6, -2})), items));
  EXPECT_FALSE(DecodeAllOrNothingReply(*Parse("-NOSCRIPT x\r\n"), items));
  EXPECT_FALSE(DecodeAllOrNothingReply(*Parse("*0\r\n"), items));
  EXPECT_TRUE(DecodeAllOrNothingReply(*Parse(Ints({1})), {}).has_value());
}

// Verifies MOVED and ASK errors name the slot and node, and ":port" gets the
// answering node's host.
TEST(ClusterTopologyTest, ParsesRedirects) {
  auto moved = ParseRedisRedirect("MOVED 866 127.0.0.1:7001", "10.0.0.1");
  ASSERT_TRUE(moved.has_value());
  EXPECT_TRUE(moved->moved);
  EXPECT_EQ(moved->slot, 866);
  EXPECT_EQ(moved->address, "127.0.0.1:7001");
  auto ask = ParseRedisRedirect("ASK 16383 :7002", "10.0.0.1");
  ASSERT_TRUE(ask.has_value());
  EXPECT_FALSE(ask->moved);
  EXPECT_EQ(ask->slot, 16383);
  EXPECT_EQ(ask->address, "10.0.0.1:7002");
}

// Verifies anything but a well-formed redirect is not followed (including an
// empty address, which the old parser read past the end of).
TEST(ClusterTopologyTest, RejectsMalformedRedirects) {
  for (const char* error : {"MOVED", "MOVED ", "MOVED 1 ", "MOVED 16384 h:1",
                            "MOVED -1 h:1", "MOVED x h:1", "MOVED 1 h:1 extra", "ASK 1",
                            "moved 1 h:1", "CLUSTERDOWN down", "ERR x", "MOVED  1 h:1"}) {
    EXPECT_FALSE(ParseRedisRedirect(error, "h").has_value()) << error;
  }
}

// Verifies addresses round-trip, IPv6 hosts in brackets, a bad port as 0.
TEST(ClusterTopologyTest, Addresses) {
  EXPECT_EQ(FormatRedisAddress("127.0.0.1", 7000), "127.0.0.1:7000");
  EXPECT_EQ(FormatRedisAddress("::1", 7000), "[::1]:7000");
  EXPECT_EQ(ParseRedisAddress("[::1]:7000"), (RedisEndpoint{"::1", 7000}));
  EXPECT_EQ(ParseRedisAddress("::1:7000"), (RedisEndpoint{"::1", 7000}));
  EXPECT_EQ(ParseRedisAddress("redis.local:6380"), (RedisEndpoint{"redis.local", 6380}));
  EXPECT_EQ(ParseRedisAddress("host:x").port, 0);
  EXPECT_EQ(ParseRedisAddress("nocolon").port, 0);
  EXPECT_EQ(ParseRedisAddress("").port, 0);
}

std::string SlotRange(long long first, long long last, const std::string& host,
                      long long port) {
  return "*3\r\n:" + std::to_string(first) + "\r\n:" + std::to_string(last) +
         "\r\n*3\r\n$" + std::to_string(host.size()) + "\r\n" + host +
         "\r\n:" + std::to_string(port) + "\r\n$2\r\nid\r\n";
}

// Verifies a CLUSTER SLOTS reply becomes its ranges in order, each with its
// master's address; an empty host is the answering node's.
TEST(ClusterTopologyTest, ParsesClusterSlots) {
  const std::string resp = "*3\r\n" + SlotRange(0, 5460, "127.0.0.1", 7000) +
                           SlotRange(5461, 10922, "", 7001) +
                           SlotRange(10923, 16383, "::1", 7002);
  auto ranges = ParseClusterSlots(*Parse(resp), "10.0.0.9");
  ASSERT_TRUE(ranges.has_value());
  ASSERT_EQ(ranges->size(), 3u);
  EXPECT_EQ((*ranges)[0].first, 0);
  EXPECT_EQ((*ranges)[0].last, 5460);
  EXPECT_EQ((*ranges)[0].address, "127.0.0.1:7000");
  EXPECT_EQ((*ranges)[1].address, "10.0.0.9:7001");
  EXPECT_EQ((*ranges)[2].first, 10923);
  EXPECT_EQ((*ranges)[2].last, 16383);
  EXPECT_EQ((*ranges)[2].address, "[::1]:7002");
}

// Verifies out-of-range slots are clamped (never an index past the map),
// malformed ranges skipped, and a non-array reply refused.
TEST(ClusterTopologyTest, ClusterSlotsBounds) {
  const std::string resp = "*5\r\n" + SlotRange(-5, 99999, "a", 1) +
                           SlotRange(20000, 30000, "b", 2) + SlotRange(9, -3, "c", 3) +
                           "*2\r\n:1\r\n:2\r\n" +
                           "*3\r\n$1\r\nx\r\n:2\r\n*2\r\n$1\r\nd\r\n:4\r\n";
  auto ranges = ParseClusterSlots(*Parse(resp), "h");
  ASSERT_TRUE(ranges.has_value());
  ASSERT_EQ(ranges->size(), 3u);
  EXPECT_EQ((*ranges)[0].first, 0);
  EXPECT_EQ((*ranges)[0].last, kRedisClusterSlots - 1);
  EXPECT_GT((*ranges)[1].first, (*ranges)[1].last);  // empty
  EXPECT_GT((*ranges)[2].first, (*ranges)[2].last);  // empty
  EXPECT_FALSE(ParseClusterSlots(
                   *Parse("-ERR This instance has cluster support disabled\r\n"), "h")
                   .has_value());
  auto none = ParseClusterSlots(*Parse("*0\r\n"), "h");
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
}

}  // namespace
}  // namespace traffik
