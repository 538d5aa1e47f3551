#include "redis/redis_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "backend/redis/key_slot.h"
#include "common/spawn.h"

namespace traffik::testing_redis {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(20);
constexpr auto kCommandTimeout = std::chrono::seconds(5);
constexpr auto kStopTimeout = std::chrono::seconds(5);
constexpr auto kClusterCreateTimeout = std::chrono::seconds(30);
constexpr auto kClusterHealthyTimeout = std::chrono::seconds(15);
constexpr int kStartAttempts = 5;
constexpr int kClusterSlots = 16384;
constexpr int kMigrateBatch = 100;
constexpr size_t kLogTailBytes = 2000;

std::string ErrnoText(int error) { return std::strerror(error); }

std::string TempRoot() {
  for (const char* name : {"TEST_TMPDIR", "TMPDIR"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && value[0] != '\0') return value;
  }
  return "/tmp";
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Tail(const std::string& text) {
  if (text.size() <= kLogTailBytes) return text;
  return absl::StrCat("...", text.substr(text.size() - kLogTailBytes));
}

// $env_var if set, else the first executable `name` on $PATH, else
// /usr/bin/<name>. Resolved before fork() so the child only calls execv.
std::string FindBinary(const char* name, const char* env_var) {
  const char* override_path = std::getenv(env_var);
  if (override_path != nullptr && override_path[0] != '\0') return override_path;
  const char* path = std::getenv("PATH");
  if (path != nullptr) {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      std::string candidate = absl::StrCat(dir, "/", name);
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return absl::StrCat("/usr/bin/", name);
}

// hiredis writes with write(2): a server that dies mid-command would raise
// SIGPIPE and kill the test binary. Ignore it once, unless someone installed
// a handler already.
void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  });
}

// Starts `binary` with `args` (argv[1..]), stdin from /dev/null, stdout and
// stderr appended to `log_path`. The child dies with the forking thread.
absl::StatusOr<pid_t> Spawn(const std::string& binary,
                            const std::vector<std::string>& args,
                            const std::string& log_path) {
  const int log_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("open(", log_path, "): ", ErrnoText(errno)));
  }
  absl::StatusOr<pid_t> pid = testing_support::SpawnChild(binary, args, log_fd);
  close(log_fd);
  return pid;
}

// Reaps `pid` if it has exited (WNOHANG). Returns the raw wait status once
// reaped (or -1 if it is not our child any more), nullopt while running.
std::optional<int> TryReap(pid_t pid) {
  int status = 0;
  pid_t result;
  do {
    result = waitpid(pid, &status, WNOHANG);
  } while (result < 0 && errno == EINTR);
  if (result == pid) return status;
  if (result < 0) return -1;  // ECHILD
  return std::nullopt;
}

// Waits at most `timeout` for `pid` to exit; see TryReap.
std::optional<int> WaitReap(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    std::optional<int> status = TryReap(pid);
    if (status.has_value() || std::chrono::steady_clock::now() >= deadline) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string DescribeWaitStatus(int status) {
  if (status == -1) return "unknown status (not our child)";
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

// ------------------------------------------------------------ hiredis glue

struct ContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

timeval ToTimeval(std::chrono::milliseconds duration) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(duration.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((duration.count() % 1000) * 1000);
  return tv;
}

absl::StatusOr<ContextPtr> Connect(int port, std::chrono::milliseconds timeout) {
  ContextPtr context(redisConnectWithTimeout("127.0.0.1", port, ToTimeval(timeout)));
  if (context == nullptr) {
    return absl::ResourceExhaustedError("redisConnectWithTimeout: out of memory");
  }
  if (context->err != 0) {
    return absl::UnavailableError(
        absl::StrCat("connect 127.0.0.1:", port, ": ", context->errstr));
  }
  if (redisSetTimeout(context.get(), ToTimeval(timeout)) != REDIS_OK) {
    return absl::UnavailableError(absl::StrCat("redisSetTimeout: ", context->errstr));
  }
  return context;
}

// Sends one command. The reply may be an error reply; only I/O and protocol
// failures are statuses (kUnavailable).
absl::StatusOr<ReplyPtr> SendRaw(redisContext* context,
                                 const std::vector<std::string>& args) {
  if (args.empty()) return absl::InvalidArgumentError("empty Redis command");
  std::vector<const char*> argv;
  std::vector<size_t> argvlen;
  for (const std::string& arg : args) {
    argv.push_back(arg.data());
    argvlen.push_back(arg.size());
  }
  ReplyPtr reply(static_cast<redisReply*>(redisCommandArgv(
      context, static_cast<int>(args.size()), argv.data(), argvlen.data())));
  if (reply == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "Redis ", args[0], ": ", context->err != 0 ? context->errstr : "no reply"));
  }
  return reply;
}

absl::Status ReplyError(const redisReply& reply) {
  return absl::FailedPreconditionError(std::string(reply.str, reply.len));
}

// Connects to 127.0.0.1:<port>, AUTHs with `password` if non-empty, and sends
// `args`. An error reply to AUTH is returned as a status; the reply to `args`
// is returned as is (possibly an error reply).
absl::StatusOr<ReplyPtr> RunRaw(int port, const std::string& password,
                                const std::vector<std::string>& args) {
  absl::StatusOr<ContextPtr> context = Connect(port, kCommandTimeout);
  if (!context.ok()) return context.status();
  if (!password.empty()) {
    absl::StatusOr<ReplyPtr> auth = SendRaw(context->get(), {"AUTH", password});
    if (!auth.ok()) return auth.status();
    if ((*auth)->type == REDIS_REPLY_ERROR) return ReplyError(**auth);
  }
  return SendRaw(context->get(), args);
}

void Render(const redisReply& reply, std::vector<std::string>* lines) {
  switch (reply.type) {
    case REDIS_REPLY_INTEGER:
      lines->push_back(absl::StrCat(reply.integer));
      return;
    case REDIS_REPLY_NIL:
      lines->push_back("(nil)");
      return;
    case REDIS_REPLY_ARRAY:
      for (size_t i = 0; i < reply.elements; ++i) Render(*reply.element[i], lines);
      return;
    default:  // STRING, STATUS, ERROR (inside an array)
      lines->emplace_back(reply.str, reply.len);
      return;
  }
}

absl::StatusOr<std::string> RenderReply(const redisReply& reply) {
  if (reply.type == REDIS_REPLY_ERROR) return ReplyError(reply);
  std::vector<std::string> lines;
  Render(reply, &lines);
  return absl::StrJoin(lines, "\n");
}

// Like RunRaw but an error reply becomes a status.
absl::StatusOr<ReplyPtr> RunChecked(int port, const std::string& password,
                                    const std::vector<std::string>& args) {
  absl::StatusOr<ReplyPtr> reply = RunRaw(port, password, args);
  if (!reply.ok()) return reply.status();
  if ((*reply)->type == REDIS_REPLY_ERROR) {
    return absl::FailedPreconditionError(
        absl::StrCat(absl::StrJoin(args, " "), " on port ", port, ": ",
                     std::string((*reply)->str, (*reply)->len)));
  }
  return reply;
}

// Value of "field:" in INFO / CLUSTER INFO text, or empty.
std::string InfoField(const std::string& info, const std::string& field) {
  for (absl::string_view line : absl::StrSplit(info, absl::ByAnyChar("\r\n"))) {
    if (absl::ConsumePrefix(&line, field) && absl::ConsumePrefix(&line, ":")) {
      return std::string(line);
    }
  }
  return "";
}

}  // namespace

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

int KeySlot(const std::string& key) { return RedisKeySlot(key); }

// ----------------------------------------------------------------- TestPki

absl::StatusOr<std::unique_ptr<TestPki>> TestPki::Create() {
  std::unique_ptr<TestPki> pki(new TestPki());
  std::string dir = absl::StrCat(TempRoot(), "/traffik-pki-XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp(", dir, "): ", ErrnoText(errno)));
  }
  pki->dir_ = dir;
  {
    std::ofstream server_ext(dir + "/server.ext");
    server_ext << "subjectAltName=DNS:redis.test,IP:127.0.0.1\n"
                  "basicConstraints=CA:FALSE\n"
                  "keyUsage=digitalSignature,keyEncipherment\n"
                  "extendedKeyUsage=serverAuth,clientAuth\n";
    std::ofstream client_ext(dir + "/client.ext");
    client_ext << "basicConstraints=CA:FALSE\n"
                  "keyUsage=digitalSignature\n"
                  "extendedKeyUsage=clientAuth\n";
  }
  const std::string openssl = FindBinary("openssl", "TRAFFIK_OPENSSL");
  const std::string log_path = dir + "/openssl.log";
  auto run = [&](std::vector<std::string> args) -> absl::Status {
    absl::StatusOr<pid_t> pid = Spawn(openssl, args, log_path);
    if (!pid.ok()) return pid.status();
    std::optional<int> status = WaitReap(*pid, std::chrono::seconds(20));
    if (!status.has_value()) {
      KillAndReap(*pid);
      return absl::DeadlineExceededError("openssl did not finish within 20 s");
    }
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      return absl::InternalError(absl::StrCat(
          "openssl ", absl::StrJoin(args, " "), " failed with ",
          DescribeWaitStatus(*status), "; output:\n", Tail(ReadFileOrEmpty(log_path))));
    }
    return absl::OkStatus();
  };
  auto new_ca = [&](const std::string& name, const std::string& cn) {
    return run({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", dir + "/" + name + ".key", "-out",
                dir + "/" + name + ".pem", "-days", "2", "-subj", "/CN=" + cn});
  };
  auto new_leaf = [&](const std::string& name, const std::string& cn) -> absl::Status {
    if (absl::Status s =
            run({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", dir + "/" + name + ".key", "-out",
                 dir + "/" + name + ".csr", "-subj", "/CN=" + cn});
        !s.ok()) {
      return s;
    }
    return run({"x509", "-req", "-in", dir + "/" + name + ".csr", "-CA", dir + "/ca.pem",
                "-CAkey", dir + "/ca.key", "-CAcreateserial", "-out",
                dir + "/" + name + ".pem", "-days", "2", "-extfile",
                dir + "/" + name + ".ext"});
  };
  for (absl::Status s :
       {new_ca("ca", "traffik-test-ca"), new_ca("other-ca", "traffik-other-ca"),
        new_leaf("server", "redis.test"), new_leaf("client", "traffik-client")}) {
    if (!s.ok()) return s;
  }
  return pki;
}

TestPki::~TestPki() {
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

// ------------------------------------------------------------- RedisServer

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(Options options) {
  IgnoreSigpipeOnce();
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port ", options.port));
  }
  std::unique_ptr<RedisServer> server(new RedisServer(std::move(options)));

  std::string dir = absl::StrCat(TempRoot(), "/traffik-redis-XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp(", dir, "): ", ErrnoText(errno)));
  }
  server->dir_ = dir;  // removed by the destructor from here on
  server->log_path_ = absl::StrCat(dir, "/redis.log");

  const bool pick_ports = server->options_.port == 0;
  absl::Status status;
  for (int attempt = 0; attempt < (pick_ports ? kStartAttempts : 1); ++attempt) {
    server->port_ = pick_ports ? FreeLoopbackPort() : server->options_.port;
    server->cluster_bus_port_ = 0;
    server->tls_port_ = 0;
    if (server->options_.cluster_enabled) {
      do {
        server->cluster_bus_port_ = FreeLoopbackPort();
      } while (server->cluster_bus_port_ == server->port_);
    }
    if (server->options_.tls.has_value()) {
      do {
        server->tls_port_ = FreeLoopbackPort();
      } while (server->tls_port_ != 0 &&
               (server->tls_port_ == server->port_ ||
                server->tls_port_ == server->cluster_bus_port_));
      if (server->tls_port_ == 0) {
        return absl::InternalError("could not find a free loopback port");
      }
    }
    if (server->port_ == 0 ||
        (server->options_.cluster_enabled && server->cluster_bus_port_ == 0)) {
      return absl::InternalError("could not find a free loopback port");
    }
    bool port_in_use = false;
    status = server->Launch(&port_in_use);
    if (status.ok()) return server;
    if (!port_in_use) break;
  }
  return status;
}

absl::Status RedisServer::Launch(bool* port_in_use) {
  *port_in_use = false;
  std::vector<std::string> args = {"--port",       absl::StrCat(port_),
                                   "--bind",       "127.0.0.1",
                                   "--save",       "",
                                   "--appendonly", "no",
                                   "--daemonize",  "no",
                                   "--dir",        dir_,
                                   "--logfile",    ""};
  if (options_.cluster_enabled) {
    args.insert(args.end(), {"--cluster-enabled", "yes", "--cluster-config-file",
                             "nodes.conf", "--cluster-node-timeout", "2000",
                             "--cluster-port", absl::StrCat(cluster_bus_port_)});
  }
  if (!options_.requirepass.empty()) {
    args.insert(args.end(), {"--requirepass", options_.requirepass});
  }
  if (options_.tls.has_value()) {
    const RedisServerTls& tls = *options_.tls;
    args.insert(args.end(),
                {"--tls-port", absl::StrCat(tls_port_), "--tls-cert-file", tls.cert_file,
                 "--tls-key-file", tls.key_file, "--tls-ca-cert-file", tls.ca_file,
                 "--tls-auth-clients", tls.auth_clients ? "yes" : "no"});
    if (options_.cluster_enabled) {
      args.insert(args.end(), {"--tls-cluster", "yes", "--tls-replication", "yes"});
    }
  }
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());

  const size_t log_offset = LogText().size();
  absl::StatusOr<pid_t> pid =
      Spawn(FindBinary("redis-server", "TRAFFIK_REDIS_SERVER"), args, log_path_);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;

  auto fail = [&](const std::string& what) {
    if (pid_ > 0) KillAndReap(pid_);
    pid_ = -1;
    const std::string log = LogText().substr(log_offset);
    if (absl::StrContains(log, "in use")) *port_in_use = true;
    return absl::UnavailableError(
        absl::StrCat("redis-server on port ", port_, ": ", what, "; log:\n", Tail(log)));
  };

  const auto deadline = std::chrono::steady_clock::now() + options_.startup_timeout;
  std::string last_error = "never answered";
  while (true) {
    if (std::optional<int> exit_status = TryReap(pid_); exit_status.has_value()) {
      pid_ = -1;
      return fail(absl::StrCat("exited early with ", DescribeWaitStatus(*exit_status)));
    }
    // Our process, not whoever else may be listening on the port: compare pids.
    absl::StatusOr<ReplyPtr> info =
        RunRaw(port_, options_.requirepass, {"INFO", "server"});
    if (info.ok() && (*info)->type != REDIS_REPLY_ERROR) {
      const std::string text((*info)->str, (*info)->len);
      if (InfoField(text, "process_id") == absl::StrCat(pid_)) return absl::OkStatus();
      *port_in_use = true;
      return fail(absl::StrCat("another process (pid ", InfoField(text, "process_id"),
                               ") answers on the port"));
    }
    last_error = info.ok() ? std::string((*info)->str, (*info)->len)
                           : std::string(info.status().message());
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail(absl::StrCat("no answer within ", options_.startup_timeout.count(),
                               " ms (last error: ", last_error, ")"));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

RedisServer::~RedisServer() {
  Kill();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string RedisServer::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::string RedisServer::url() const {
  return absl::StrCat("redis://127.0.0.1:", port_, "/0");
}

std::string RedisServer::tls_url() const {
  return absl::StrCat("rediss://127.0.0.1:", tls_port_, "/0");
}

std::string RedisServer::LogText() const { return ReadFileOrEmpty(log_path_); }

void RedisServer::Kill() {
  if (pid_ <= 0) return;
  KillAndReap(pid_);
  pid_ = -1;
}

void RedisServer::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  if (!WaitReap(pid_, kStopTimeout).has_value()) KillAndReap(pid_);
  pid_ = -1;
}

absl::Status RedisServer::Restart() {
  Kill();
  // --save '' means no dump is written, but be sure the dataset starts empty.
  std::error_code ignored;
  std::filesystem::remove(absl::StrCat(dir_, "/dump.rdb"), ignored);
  std::filesystem::remove_all(absl::StrCat(dir_, "/appendonlydir"), ignored);
  bool port_in_use = false;
  return Launch(&port_in_use);
}

bool RedisServer::IsRunning() {
  if (pid_ <= 0) return false;
  if (TryReap(pid_).has_value()) {
    pid_ = -1;
    return false;
  }
  return true;
}

absl::StatusOr<std::string> RedisServer::Command(std::vector<std::string> args) const {
  absl::StatusOr<ReplyPtr> reply = RunRaw(port_, options_.requirepass, args);
  if (!reply.ok()) return reply.status();
  return RenderReply(**reply);
}

absl::StatusOr<std::string> RedisServer::CommandNoAuth(
    std::vector<std::string> args) const {
  absl::StatusOr<ReplyPtr> reply = RunRaw(port_, "", args);
  if (!reply.ok()) return reply.status();
  return RenderReply(**reply);
}

// ------------------------------------------------------------ RedisCluster

absl::StatusOr<std::unique_ptr<RedisCluster>> RedisCluster::Start(
    int masters, std::optional<RedisServerTls> tls) {
  if (masters < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Redis Cluster needs at least 3 masters, not ", masters));
  }
  std::unique_ptr<RedisCluster> cluster(new RedisCluster());
  for (int i = 0; i < masters; ++i) {
    RedisServer::Options options;
    options.cluster_enabled = true;
    options.tls = tls;
    absl::StatusOr<std::unique_ptr<RedisServer>> node = RedisServer::Start(options);
    if (!node.ok()) return node.status();
    cluster->nodes_.push_back(std::move(*node));
  }

  std::vector<std::string> args = {"--cluster", "create"};
  for (const auto& node : cluster->nodes_) args.push_back(node->address());
  args.insert(args.end(), {"--cluster-replicas", "0", "--cluster-yes"});
  const std::string log_path =
      absl::StrCat(cluster->nodes_[0]->dir(), "/cluster-create.log");
  absl::StatusOr<pid_t> cli =
      Spawn(FindBinary("redis-cli", "TRAFFIK_REDIS_CLI"), args, log_path);
  if (!cli.ok()) return cli.status();
  std::optional<int> exit_status = WaitReap(*cli, kClusterCreateTimeout);
  if (!exit_status.has_value()) {
    KillAndReap(*cli);
    return absl::DeadlineExceededError(
        absl::StrCat("redis-cli --cluster create did not finish within ",
                     std::chrono::seconds(kClusterCreateTimeout).count(), " s; output:\n",
                     Tail(ReadFileOrEmpty(log_path))));
  }
  if (!WIFEXITED(*exit_status) || WEXITSTATUS(*exit_status) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "redis-cli --cluster create failed with ", DescribeWaitStatus(*exit_status),
        "; output:\n", Tail(ReadFileOrEmpty(log_path))));
  }

  if (absl::Status healthy = cluster->WaitUntilHealthy(kClusterHealthyTimeout);
      !healthy.ok()) {
    return healthy;
  }
  for (const auto& node : cluster->nodes_) {
    absl::StatusOr<std::string> id = node->Command({"CLUSTER", "MYID"});
    if (!id.ok()) return id.status();
    cluster->ids_.push_back(*id);
  }
  return cluster;
}

absl::Status RedisCluster::WaitUntilHealthy(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string known = absl::StrCat(nodes_.size());
  while (true) {
    std::string problem;
    for (size_t i = 0; i < nodes_.size() && problem.empty(); ++i) {
      absl::StatusOr<std::string> info = nodes_[i]->Command({"CLUSTER", "INFO"});
      if (!info.ok()) {
        problem = absl::StrCat("node ", i, ": ", info.status().ToString());
      } else if (InfoField(*info, "cluster_state") != "ok" ||
                 InfoField(*info, "cluster_slots_assigned") != "16384" ||
                 InfoField(*info, "cluster_known_nodes") != known) {
        problem = absl::StrCat("node ", i, " CLUSTER INFO:\n", *info);
      }
    }
    if (problem.empty()) return absl::OkStatus();
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("cluster not healthy within ", timeout.count(), " ms; ", problem));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

RedisCluster::~RedisCluster() {
  for (auto& node : nodes_) node->Kill();
  // Temp dirs go with the RedisServer destructors.
}

std::string RedisCluster::seeds_url() const {
  std::vector<std::string> addresses;
  for (const auto& node : nodes_) addresses.push_back(node->address());
  return absl::StrCat("redis+cluster://", absl::StrJoin(addresses, ","));
}

std::string RedisCluster::tls_seeds_url() const {
  std::vector<std::string> addresses;
  for (const auto& node : nodes_) {
    addresses.push_back(absl::StrCat("127.0.0.1:", node->tls_port()));
  }
  return absl::StrCat("rediss+cluster://", absl::StrJoin(addresses, ","));
}

absl::StatusOr<int> RedisCluster::NodeForSlot(int slot) const {
  if (slot < 0 || slot >= kClusterSlots) {
    return absl::InvalidArgumentError(absl::StrCat("bad slot ", slot));
  }
  absl::Status last = absl::UnavailableError("no nodes");
  for (const auto& asked : nodes_) {
    absl::StatusOr<ReplyPtr> slots =
        RunChecked(asked->port(), asked->options().requirepass, {"CLUSTER", "SLOTS"});
    if (!slots.ok()) {
      last = slots.status();
      continue;
    }
    // [[start, end, [ip, port, id, ...], replicas...], ...]
    const redisReply& ranges = **slots;
    for (size_t r = 0; ranges.type == REDIS_REPLY_ARRAY && r < ranges.elements; ++r) {
      const redisReply& range = *ranges.element[r];
      if (range.type != REDIS_REPLY_ARRAY || range.elements < 3 ||
          range.element[2]->type != REDIS_REPLY_ARRAY || range.element[2]->elements < 2) {
        return absl::InternalError("unexpected CLUSTER SLOTS reply shape");
      }
      if (slot < range.element[0]->integer || slot > range.element[1]->integer) continue;
      const long long port = range.element[2]->element[1]->integer;
      for (size_t i = 0; i < nodes_.size(); ++i) {
        if (nodes_[i]->port() == port ||
            (nodes_[i]->tls_port() != 0 && nodes_[i]->tls_port() == port)) {
          return static_cast<int>(i);
        }
      }
      return absl::InternalError(
          absl::StrCat("slot ", slot, " is served by unknown port ", port));
    }
    return absl::NotFoundError(absl::StrCat("slot ", slot, " is not assigned"));
  }
  return last;
}

absl::StatusOr<int> RedisCluster::NodeForKey(const std::string& key) const {
  return NodeForSlot(KeySlot(key));
}

absl::Status RedisCluster::MigrateSlot(int slot, int from, int to) {
  if (slot < 0 || slot >= kClusterSlots) {
    return absl::InvalidArgumentError(absl::StrCat("bad slot ", slot));
  }
  if (from < 0 || from >= size() || to < 0 || to >= size() || from == to) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad MigrateSlot nodes from=", from, " to=", to));
  }
  const RedisServer& source = node(from);
  const RedisServer& target = node(to);
  const std::string slot_text = absl::StrCat(slot);
  auto run = [](const RedisServer& server, const std::vector<std::string>& args) {
    return RunChecked(server.port(), server.options().requirepass, args);
  };

  if (absl::StatusOr<ReplyPtr> r =
          run(target, {"CLUSTER", "SETSLOT", slot_text, "IMPORTING", node_id(from)});
      !r.ok()) {
    return r.status();
  }
  if (absl::StatusOr<ReplyPtr> r =
          run(source, {"CLUSTER", "SETSLOT", slot_text, "MIGRATING", node_id(to)});
      !r.ok()) {
    return r.status();
  }
  while (true) {
    absl::StatusOr<ReplyPtr> keys =
        run(source, {"CLUSTER", "GETKEYSINSLOT", slot_text, absl::StrCat(kMigrateBatch)});
    if (!keys.ok()) return keys.status();
    if ((*keys)->type != REDIS_REPLY_ARRAY || (*keys)->elements == 0) break;
    std::vector<std::string> migrate = {
        "MIGRATE",
        "127.0.0.1",
        absl::StrCat(target.port()),
        "",
        "0",
        absl::StrCat(std::chrono::milliseconds(kCommandTimeout).count()),
        "KEYS"};
    if (!target.options().requirepass.empty()) {
      migrate.insert(migrate.begin() + 6, {"AUTH", target.options().requirepass});
    }
    for (size_t i = 0; i < (*keys)->elements; ++i) {
      migrate.emplace_back((*keys)->element[i]->str, (*keys)->element[i]->len);
    }
    if (absl::StatusOr<ReplyPtr> r = run(source, migrate); !r.ok()) return r.status();
  }
  // Owner first, then the old owner (which then answers MOVED), then the rest.
  std::vector<int> order = {to, from};
  for (int i = 0; i < size(); ++i) {
    if (i != to && i != from) order.push_back(i);
  }
  for (int i : order) {
    if (absl::StatusOr<ReplyPtr> r =
            run(node(i), {"CLUSTER", "SETSLOT", slot_text, "NODE", node_id(to)});
        !r.ok()) {
      return r.status();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> RedisCluster::KeysPerNode() const {
  std::vector<int64_t> counts;
  for (const auto& node : nodes_) {
    absl::StatusOr<std::string> size = node->Command({"DBSIZE"});
    if (!size.ok()) return size.status();
    int64_t count = 0;
    if (!absl::SimpleAtoi(*size, &count)) {
      return absl::InternalError(absl::StrCat("bad DBSIZE reply: ", *size));
    }
    counts.push_back(count);
  }
  return counts;
}

}  // namespace traffik::testing_redis
