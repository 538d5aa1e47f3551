// Tests of the traffikctl command-line client: the real binary (TRAFFIKCTL_PATH)
// run against the real traffikd (started once for the suite on a loopback
// port), checking exit codes, human and --json output, batch input on stdin
// and health.

#include <stdio.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "e2e/shared_traffikd.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::AllOf;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The outcome of one traffikctl run.
struct CtlRun {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string ShellQuote(const std::string& arg) {
  std::string out = "'";
  for (const char c : arg) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs traffikctl with `args` and `input` on stdin (bounded by `timeout` 20).
CtlRun RunCtl(const std::vector<std::string>& args, const std::string& input = "") {
  absl::StatusOr<e2e::TempFile> in =
      e2e::TempFile::Create(input, ".in", "traffikctl-test");
  absl::StatusOr<e2e::TempFile> err =
      e2e::TempFile::Create("", ".err", "traffikctl-test");
  CtlRun run;
  if (!in.ok() || !err.ok()) {
    ADD_FAILURE() << "temp files";
    return run;
  }
  std::string command = absl::StrCat("timeout 20 ", ShellQuote(TRAFFIKCTL_PATH));
  for (const std::string& arg : args) absl::StrAppend(&command, " ", ShellQuote(arg));
  absl::StrAppend(&command, " <", ShellQuote(in->path()), " 2>", ShellQuote(err->path()));
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed";
    return run;
  }
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) run.out.append(buffer, n);
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.err = ReadFile(err->path());
  return run;
}

std::ostream& operator<<(std::ostream& os, const CtlRun& run) {
  return os << "exit " << run.exit_code << "\nstdout: " << run.out
            << "\nstderr: " << run.err;
}

class TraffikctlTest : public e2e::SharedTraffikdTest {
 protected:
  // traffikctl --target <server> args...
  static CtlRun Ctl(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {"--target", server().grpc_address()});
    return RunCtl(args, input);
  }

  static std::string Id(const std::string& suffix = "") {
    return absl::StrCat(::testing::UnitTest::GetInstance()->current_test_info()->name(),
                        "/", suffix);
  }
};

// Verifies `check` prints the decision and exits 0 when allowed, 1 when throttled.
TEST_F(TraffikctlTest, CheckAllowedThenThrottled) {
  const std::vector<std::string> check = {"check", "ctl",         Id(),     "--limit",
                                          "2",     "--period-ms", "3600000"};
  CtlRun first = Ctl(check);
  EXPECT_EQ(first.exit_code, 0) << first;
  EXPECT_THAT(first.out, StartsWith("allowed wait_ms=0 limit=2 remaining=1 reset_ms="));
  EXPECT_EQ(Ctl(check).exit_code, 0);
  CtlRun throttled = Ctl(check);
  EXPECT_EQ(throttled.exit_code, 1) << throttled;
  EXPECT_THAT(throttled.out,
              AllOf(StartsWith("throttled wait_ms="), HasSubstr("retry_after_s="),
                    HasSubstr("limit=2 remaining=0")));
}

// Verifies --tenant and --cost are passed, flags may come in any order, --flag=value
// works.
TEST_F(TraffikctlTest, CheckFlags) {
  CtlRun run =
      RunCtl({"check", "--cost=3", "ctl", Id(), "--limit", "5", "--period-ms=3600000",
              "--tenant", "default", "--target", server().grpc_address()});
  EXPECT_EQ(run.exit_code, 0) << run;
  EXPECT_THAT(run.out, HasSubstr("limit=5 remaining=2"));
  CtlRun unknown_tenant = Ctl({"check", "ctl", Id("t"), "--tenant", "nope", "--limit",
                               "5", "--period-ms", "1000"});
  EXPECT_EQ(unknown_tenant.exit_code, 2) << unknown_tenant;
  EXPECT_THAT(unknown_tenant.err, HasSubstr("NOT_FOUND"));
}

// Verifies --json prints one JSON object with the decision's keys.
TEST_F(TraffikctlTest, CheckJson) {
  CtlRun run =
      Ctl({"--json", "check", "ctl", Id(), "--limit", "1", "--period-ms", "3600000"});
  EXPECT_EQ(run.exit_code, 0) << run;
  EXPECT_THAT(run.out,
              AllOf(StartsWith("{"), EndsWith("}\n"), HasSubstr("\"allowed\":true"),
                    HasSubstr("\"wait_ms\":0"), HasSubstr("\"limit\":1"),
                    HasSubstr("\"remaining\":0"), HasSubstr("\"reset_ms\":")));
  CtlRun throttled =
      Ctl({"--json", "check", "ctl", Id(), "--limit", "1", "--period-ms", "3600000"});
  EXPECT_EQ(throttled.exit_code, 1) << throttled;
  EXPECT_THAT(throttled.out,
              AllOf(HasSubstr("\"allowed\":false"), HasSubstr("\"retry_after_s\":")));
}

// Verifies errors exit 2 with the server's message: unknown throttle, unreachable, bad
// usage.
TEST_F(TraffikctlTest, ErrorsExitTwo) {
  CtlRun unknown = Ctl({"check", "not-configured", Id()});
  EXPECT_EQ(unknown.exit_code, 2) << unknown;
  EXPECT_THAT(unknown.err, AllOf(HasSubstr("NOT_FOUND"), HasSubstr("not-configured")));

  CtlRun json = Ctl({"--json", "check", "not-configured", Id()});
  EXPECT_EQ(json.exit_code, 2) << json;
  EXPECT_THAT(json.out,
              AllOf(HasSubstr("\"error\""), HasSubstr("\"code\":\"NOT_FOUND\"")));

  std::string closed;
  {
    absl::StatusOr<e2e::HeldPort> held = e2e::HeldPort::Listen();
    ASSERT_TRUE(held.ok());
    closed = absl::StrCat("127.0.0.1:", held->port());
  }
  CtlRun unreachable = RunCtl(
      {"--target", closed, "check", "ctl", Id(), "--limit", "1", "--period-ms", "1000"});
  EXPECT_EQ(unreachable.exit_code, 2) << unreachable;
  EXPECT_THAT(unreachable.err, HasSubstr("UNAVAILABLE"));

  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"check", "only-uid"},
           {"check", "ctl", "id", "--limit", "5"},  // without --period-ms
           {"check", "ctl", "id", "--cost", "x"},
           {"check", "ctl", "id", "--service", "s"},
           {"--deadline-ms", "0", "health"},
           {"health", "extra"},
       }) {
    CtlRun run = Ctl(bad);
    EXPECT_EQ(run.exit_code, 2) << absl::StrJoin(bad, " ") << "\n" << run;
    EXPECT_THAT(run.err, HasSubstr("usage:")) << absl::StrJoin(bad, " ");
  }
}

// Verifies --deadline-ms bounds the call against a server that never answers.
TEST_F(TraffikctlTest, DeadlineBoundsCall) {
  absl::StatusOr<e2e::HeldPort> silent = e2e::HeldPort::Listen();
  ASSERT_TRUE(silent.ok());
  const auto start = std::chrono::steady_clock::now();
  CtlRun run = RunCtl({"--target", absl::StrCat("127.0.0.1:", silent->port()),
                       "--deadline-ms", "300", "health"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(run.exit_code, 2) << run;
  EXPECT_THAT(run.err, HasSubstr("DEADLINE_EXCEEDED"));
}

// Verifies `batch` reads requests from stdin and exits 1 when any item is throttled.
TEST_F(TraffikctlTest, BatchFromStdin) {
  const std::string input =
      absl::StrCat("# uid identifier fields\n",                      //
                   "ctl ", Id("a"), " limit=1 period_ms=3600000\n",  //
                   "\n",                                             //
                   "ctl ", Id("a"), " limit=1 period_ms=3600000\n",  //
                   "ctl ", Id("b"), " tenant=default cost=2 limit=5 period_ms=3600000\n");
  CtlRun run = Ctl({"batch"}, input);
  EXPECT_EQ(run.exit_code, 1) << run;
  const std::vector<std::string> lines = absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << run;
  EXPECT_EQ(lines[3],
            "verdict: throttled (2 of 3 allowed; the allowed hits took their tokens)");
  EXPECT_THAT(lines[0], StartsWith(absl::StrCat("ctl ", Id("a"), " allowed wait_ms=0")));
  EXPECT_THAT(lines[1], StartsWith(absl::StrCat("ctl ", Id("a"), " throttled wait_ms=")));
  EXPECT_THAT(lines[2], AllOf(StartsWith(absl::StrCat("ctl ", Id("b"), " allowed")),
                              HasSubstr("limit=5 remaining=3")));

  CtlRun all_allowed =
      Ctl({"batch"}, absl::StrCat("ctl ", Id("c"), " limit=9 period_ms=1000\n"));
  EXPECT_EQ(all_allowed.exit_code, 0) << all_allowed;
  EXPECT_THAT(all_allowed.out, EndsWith("\nverdict: allowed (1 of 1 allowed)\n"));
}

// Verifies `batch --all-or-nothing` takes no tokens when one item is refused, says so
// in its verdict line and --json, and takes them all when every item is allowed.
TEST_F(TraffikctlTest, BatchAllOrNothing) {
  const std::string full =
      absl::StrCat("ctl ", Id("full"), " limit=1 period_ms=3600000\n");
  const std::string free =
      absl::StrCat("ctl ", Id("free"), " limit=5 period_ms=3600000\n");
  ASSERT_EQ(Ctl({"batch"}, full).exit_code, 0);  // empties Id("full")
  CtlRun refused = Ctl({"batch", "--all-or-nothing"}, free + full);
  EXPECT_EQ(refused.exit_code, 1) << refused;
  EXPECT_THAT(refused.out,
              EndsWith("\nverdict: throttled (1 of 2 allowed; all-or-nothing: nothing "
                       "taken)\n"));
  CtlRun json = Ctl({"--json", "--all-or-nothing", "batch"}, free + full);
  EXPECT_EQ(json.exit_code, 1) << json;
  EXPECT_THAT(json.out, StartsWith("{\"allowed\":false,\"applied\":false,"
                                   "\"all_or_nothing\":true,\"results\":["));
  // Nothing was taken from Id("free") by the two refused batches: 5 left, then 4.
  CtlRun applied = Ctl({"batch", "--all-or-nothing"}, free);
  EXPECT_EQ(applied.exit_code, 0) << applied;
  EXPECT_THAT(applied.out, HasSubstr("limit=5 remaining=4"));
  EXPECT_THAT(applied.out,
              EndsWith("\nverdict: allowed (1 of 1 allowed; all-or-nothing: tokens "
                       "taken)\n"));
  CtlRun with_value = Ctl({"batch", "--all-or-nothing=yes"}, free);
  EXPECT_EQ(with_value.exit_code, 2) << with_value;
  CtlRun on_check = Ctl({"check", "ctl", Id(), "--all-or-nothing"});
  EXPECT_EQ(on_check.exit_code, 2) << on_check;
  EXPECT_THAT(on_check.err, HasSubstr("unknown flag --all-or-nothing for check"));
}

// Verifies --version prints the version and exits 0, with or without a command.
TEST_F(TraffikctlTest, Version) {
  CtlRun run = RunCtl({"--version"});
  EXPECT_EQ(run.exit_code, 0) << run;
  EXPECT_EQ(run.out, absl::StrCat("traffikctl ", TRAFFIK_VERSION, "\n"));
  EXPECT_EQ(RunCtl({"--version", "health"}).out, run.out);
}

// Verifies an unknown flag says "unknown flag" (quoted, escaped), exits 2, and never
// takes the command as its value.
TEST_F(TraffikctlTest, UnknownFlag) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--bogus", "health"}, {"health", "--bogus"}, {"--bogus=1", "health"}}) {
    CtlRun run = Ctl(args);
    EXPECT_EQ(run.exit_code, 2) << absl::StrJoin(args, " ") << "\n" << run;
    EXPECT_THAT(run.err, HasSubstr("unknown flag \"--bogus\"")) << run;
    EXPECT_THAT(run.err, HasSubstr("usage:"));
  }
  CtlRun hostile = Ctl({"--a\x1b[2J\"", "health"});
  EXPECT_EQ(hostile.exit_code, 2) << hostile;
  EXPECT_THAT(hostile.err, HasSubstr("unknown flag \"--a\\x1b[2J\\x22\""));
}

// Verifies `batch --json` prints the overall decision and one object per item, in order.
TEST_F(TraffikctlTest, BatchJson) {
  const std::string input = absl::StrCat("ctl ", Id("a"), " limit=1 period_ms=3600000\n",
                                         "ctl ", Id("a"), " limit=1 period_ms=3600000\n");
  CtlRun run = Ctl({"--json", "batch"}, input);
  EXPECT_EQ(run.exit_code, 1) << run;
  EXPECT_THAT(run.out, AllOf(StartsWith("{\"allowed\":false,\"applied\":true,"
                                        "\"all_or_nothing\":false,\"results\":[{"),
                             HasSubstr(absl::StrCat("\"identifier\":\"", Id("a"), "\"")),
                             HasSubstr("\"throttle_uid\":\"ctl\""), EndsWith("]}\n")));
  const size_t first = run.out.find("\"allowed\":true");
  const size_t second = run.out.find("\"allowed\":false", run.out.find("results"));
  EXPECT_NE(first, std::string::npos);
  EXPECT_NE(second, std::string::npos);
  EXPECT_LT(first, second);
}

// Verifies bad batch input exits 2 naming the line, and an invalid item rejects the
// batch.
TEST_F(TraffikctlTest, BatchErrors) {
  CtlRun bad_field = Ctl({"batch"}, "ctl a limit=1 period_ms=10\nctl b color=red\n");
  EXPECT_EQ(bad_field.exit_code, 2) << bad_field;
  EXPECT_THAT(bad_field.err, HasSubstr("stdin line 2"));
  CtlRun empty = Ctl({"batch"}, "# nothing\n");
  EXPECT_EQ(empty.exit_code, 2) << empty;
  CtlRun invalid = Ctl({"batch"}, absl::StrCat("ctl ", Id(), " limit=1 period_ms=10\n",
                                               "ctl ", Id(), " limit=0 period_ms=10\n"));
  EXPECT_EQ(invalid.exit_code, 2) << invalid;
  EXPECT_THAT(invalid.err,
              AllOf(HasSubstr("INVALID_ARGUMENT"), HasSubstr("requests[1]")));
}

// Verifies `health` exits 0 and prints SERVING, with --json too; unknown service exits 2.
TEST_F(TraffikctlTest, Health) {
  CtlRun run = Ctl({"health"});
  EXPECT_EQ(run.exit_code, 0) << run;
  EXPECT_EQ(run.out, "SERVING\n");
  CtlRun json = Ctl({"--json", "health", "--service", "traffik.v1.ThrottleService"});
  EXPECT_EQ(json.exit_code, 0) << json;
  EXPECT_EQ(json.out, "{\"service\":\"traffik.v1.ThrottleService\",\"serving\":true}\n");
  CtlRun unknown = Ctl({"health", "--service", "no.such.Service"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown;
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND"));
}

// Verifies --help prints the usage and exits 0.
TEST_F(TraffikctlTest, Help) {
  CtlRun run = RunCtl({"--help"});
  EXPECT_EQ(run.exit_code, 0) << run;
  EXPECT_THAT(run.out, AllOf(HasSubstr("usage: traffikctl"), HasSubstr("exit code")));
}

// Verifies the admin commands against a server without admin_api exit 2
// with UNIMPLEMENTED and a hint to enable it.
TEST_F(TraffikctlTest, AdminCommandsNeedAdminApi) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"reset", "ctl"}, {"peek", "ctl", "x"}, {"throttles"}}) {
    CtlRun run = Ctl(args);
    EXPECT_EQ(run.exit_code, 2) << run;
    EXPECT_THAT(run.err, AllOf(HasSubstr("UNIMPLEMENTED"), HasSubstr("admin_api: true")));
  }
}

// A traffikd with the admin API on, for the admin commands.
class TraffikctlAdminTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<e2e::TempFile> config = e2e::TempFile::Create(R"yaml(
admin_api: true
throttles:
  - uid: search
    limit: 3
    period: 1h
  - uid: login
    limit: 5
    period: 1m
tenants:
  - name: default
  - name: gold
    quota_multiplier: 2
)yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    auto server = e2e::TraffikdProcess::Start(
        {"--config", config->path(), "--listen", "127.0.0.1:0", "--metrics-listen", ""});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    config_ = std::make_unique<e2e::TempFile>(*std::move(config));
  }
  static void TearDownTestSuite() {
    server_.reset();
    config_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static CtlRun Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"--target", server_->grpc_address()});
    return RunCtl(args);
  }

  inline static std::unique_ptr<e2e::TraffikdProcess> server_;
  inline static std::unique_ptr<e2e::TempFile> config_;
};

// Verifies `throttles` lists the tenant's throttles after its multiplier, as
// text and JSON; an unknown tenant exits 2 with NOT_FOUND.
TEST_F(TraffikctlAdminTest, Throttles) {
  CtlRun text = Ctl({"throttles"});
  EXPECT_EQ(text.exit_code, 0) << text;
  EXPECT_EQ(text.out,
            "login limit=5 period_ms=60000\nsearch limit=3 period_ms=3600000\n");
  CtlRun json = Ctl({"--json", "throttles", "--tenant", "gold"});
  EXPECT_EQ(json.exit_code, 0) << json;
  EXPECT_EQ(json.out,
            "{\"throttles\":[{\"uid\":\"login\",\"limit\":10,\"period_ms\":60000},"
            "{\"uid\":\"search\",\"limit\":6,\"period_ms\":3600000}]}\n");
  CtlRun unknown = Ctl({"throttles", "--tenant", "nobody"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown;
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND"));
}

// Verifies `peek` shows the bucket as it stands and takes nothing (exit 0),
// exits 1 once a hit would be throttled, and prints JSON with --json.
TEST_F(TraffikctlAdminTest, Peek) {
  for (int i = 0; i < 3; ++i) {
    CtlRun run = Ctl({"peek", "search", "peek-user"});
    EXPECT_EQ(run.exit_code, 0) << run;
    EXPECT_EQ(run.out, "would be allowed wait_ms=0 limit=3 remaining=3 reset_ms=0\n");
  }
  ASSERT_EQ(Ctl({"check", "search", "peek-user"}).exit_code, 0);
  CtlRun two = Ctl({"--json", "peek", "search", "peek-user", "--cost", "2"});
  EXPECT_EQ(two.exit_code, 0) << two;
  EXPECT_THAT(two.out, AllOf(StartsWith("{\"allowed\":true,\"wait_ms\":0,"),
                             HasSubstr("\"limit\":3,\"remaining\":2,\"reset_ms\":")));
  CtlRun three = Ctl({"peek", "search", "peek-user", "--cost", "3"});
  EXPECT_EQ(three.exit_code, 1) << three;
  EXPECT_THAT(three.out,
              AllOf(StartsWith("would be throttled wait_ms="),
                    HasSubstr("retry_after_s=1200"), HasSubstr("remaining=2")));
  CtlRun inline_spec =
      Ctl({"peek", "adhoc", "peek-user", "--limit", "7", "--period-ms", "1000"});
  EXPECT_EQ(inline_spec.exit_code, 0) << inline_spec;
  EXPECT_THAT(inline_spec.out, HasSubstr("limit=7 remaining=7"));
  CtlRun bad = Ctl({"peek", "search"});
  EXPECT_EQ(bad.exit_code, 2) << bad;
  EXPECT_THAT(bad.err, HasSubstr("usage:"));
}

// Verifies `reset` forgets one bucket, a throttle's buckets and a tenant's,
// printing how many (text and JSON), and that its errors exit 2.
TEST_F(TraffikctlAdminTest, Reset) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Ctl({"check", "search", "reset-a"}).exit_code, 0);
    ASSERT_EQ(Ctl({"check", "search", "reset-b"}).exit_code, 0);
    ASSERT_EQ(Ctl({"check", "search", "reset-a", "--tenant", "gold"}).exit_code, 0);
  }
  ASSERT_EQ(Ctl({"check", "search", "reset-a"}).exit_code, 1);
  CtlRun one = Ctl({"reset", "search", "reset-a"});
  EXPECT_EQ(one.exit_code, 0) << one;
  EXPECT_EQ(one.out, "removed=1\n");
  EXPECT_EQ(Ctl({"check", "search", "reset-a"}).exit_code, 0);
  EXPECT_EQ(Ctl({"check", "search", "reset-b"}).exit_code, 1);
  CtlRun uid = Ctl({"--json", "reset", "search"});
  EXPECT_EQ(uid.exit_code, 0) << uid;
  EXPECT_THAT(uid.out, StartsWith("{\"removed\":"));
  EXPECT_EQ(Ctl({"check", "search", "reset-b"}).exit_code, 0);
  CtlRun tenant = Ctl({"reset", "--tenant", "gold"});
  EXPECT_EQ(tenant.exit_code, 0) << tenant;
  EXPECT_EQ(tenant.out, "removed=1\n");
  CtlRun too_many = Ctl({"reset", "a", "b", "c"});
  EXPECT_EQ(too_many.exit_code, 2) << too_many;
  EXPECT_THAT(too_many.err, HasSubstr("usage:"));
  CtlRun bad_uid = Ctl({"reset", "a:b"});
  EXPECT_EQ(bad_uid.exit_code, 2) << bad_uid;
  EXPECT_THAT(bad_uid.err, HasSubstr("INVALID_ARGUMENT"));
}

}  // namespace
}  // namespace traffik
