#pragma once

// Hermetic Redis for tests: real redis-server processes (and a Redis Cluster
// built from them with redis-cli) on free loopback ports, each in its own temp
// directory, killed and cleaned up when the owning object is destroyed.
//
// Binaries: $TRAFFIK_REDIS_SERVER / $TRAFFIK_REDIS_CLI if set, else
// redis-server / redis-cli from $PATH (else /usr/bin).
//
// Children get PR_SET_PDEATHSIG(SIGKILL), which fires when the *thread* that
// forked them exits: create and destroy these objects on the main test thread.
//
// Replies of Command() and friends: a Redis error reply is
// absl::StatusCode::kFailedPrecondition with the Redis message ("NOAUTH ...",
// "MOVED 866 127.0.0.1:41234", "WRONGTYPE ..."); a connection or protocol
// failure (server down, timeout) is kUnavailable.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace traffik::testing_redis {

// A TCP port on 127.0.0.1 that was free a moment ago: binds a socket to
// 127.0.0.1:0, reads the port the kernel chose and closes the socket. Another
// process may take it before the caller binds it (callers retry). 0 on failure.
int FreeLoopbackPort();

// The Redis Cluster hash slot (0..16383) of `key`: CRC16 (XMODEM) of the key,
// or of the first non-empty "{...}" hash tag in it, modulo 16384. Same result
// as CLUSTER KEYSLOT, without a server.
int KeySlot(const std::string& key);

// A throwaway PKI for TLS tests, made with the openssl CLI (EC P-256, valid
// for two days) in its own temp dir, removed by the destructor:
// - ca: the CA that signs the server and client certificates;
// - server: CN "redis.test", SANs DNS:redis.test and IP:127.0.0.1 (server
//   and client auth, so Redis Cluster nodes use it on their TLS bus too);
// - client: CN "traffik-client" (client auth), signed by ca;
// - other_ca: an unrelated CA (signs nothing we use).
class TestPki {
 public:
  static absl::StatusOr<std::unique_ptr<TestPki>> Create();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;
  ~TestPki();

  const std::string& dir() const { return dir_; }
  std::string ca_file() const { return dir_ + "/ca.pem"; }
  std::string server_cert_file() const { return dir_ + "/server.pem"; }
  std::string server_key_file() const { return dir_ + "/server.key"; }
  std::string client_cert_file() const { return dir_ + "/client.pem"; }
  std::string client_key_file() const { return dir_ + "/client.key"; }
  std::string other_ca_file() const { return dir_ + "/other-ca.pem"; }

 private:
  TestPki() = default;
  std::string dir_;
};

// TLS on a test redis-server: --tls-port (a second free loopback port) with
// these files. The plaintext --port stays open for the harness' own
// commands (Command(), cluster setup); the code under test uses tls_port().
struct RedisServerTls {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;        // --tls-ca-cert-file (checks client certificates)
  bool auth_clients = false;  // --tls-auth-clients yes: a client cert is required
};

struct RedisServerOptions {
  // --cluster-enabled yes (with nodes.conf in the temp dir, node timeout
  // 2000 ms, and a cluster bus port picked like the client port).
  bool cluster_enabled = false;
  // --requirepass; empty: no password.
  std::string requirepass;
  // 0: pick a free loopback port (retrying a few times if another process
  // takes it first). Otherwise that port, no retry.
  int port = 0;
  // Set: also listen with TLS on tls_port() (--tls-cluster and
  // --tls-replication too when cluster_enabled, so the bus runs over TLS and
  // CLUSTER SLOTS / MOVED name TLS ports to TLS clients).
  std::optional<RedisServerTls> tls;
  // Appended to the redis-server command line, e.g. {"--maxmemory", "1mb"}.
  std::vector<std::string> extra_args;
  // How long Start()/Restart() wait for the server to answer.
  std::chrono::milliseconds startup_timeout = std::chrono::seconds(5);
};

// One redis-server child process on 127.0.0.1, with no persistence
// (--save '' --appendonly no): every (re)start begins with an empty dataset.
//
// Thread-safety: Command()/CommandNoAuth() and the const accessors may be
// called from several threads at once (each call uses its own connection).
// Kill/Stop/Restart/IsRunning and destruction must not run concurrently with
// anything else on the same object.
class RedisServer {
 public:
  using Options = RedisServerOptions;

  // Starts redis-server and waits (at most options.startup_timeout) until the
  // process it started, and not some other one on that port, answers. Errors
  // carry the tail of the server log.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(Options options = {});

  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  // Kills (SIGKILL) and reaps the process if running; removes the temp dir.
  ~RedisServer();

  int port() const { return port_; }
  // The cluster bus port; 0 unless options.cluster_enabled.
  int cluster_bus_port() const { return cluster_bus_port_; }
  // "127.0.0.1:PORT".
  std::string address() const;
  // "redis://127.0.0.1:PORT/0" (no credentials, even with requirepass).
  std::string url() const;
  // The TLS port; 0 unless options.tls.
  int tls_port() const { return tls_port_; }
  // "rediss://127.0.0.1:TLS_PORT/0".
  std::string tls_url() const;
  const Options& options() const { return options_; }
  // The server's working directory (nodes.conf, redis.log live here).
  const std::string& dir() const { return dir_; }
  // The pid of the running process; -1 after Kill()/Stop().
  pid_t pid() const { return pid_; }
  // Everything the server logged so far (all starts, appended).
  std::string LogText() const;

  // SIGKILL and reap: simulates a crash. No-op if not running.
  void Kill();
  // SIGTERM and reap (SIGKILL after 5 s). No-op if not running.
  void Stop();
  // Kills the process if it is still running, then starts it again on the
  // same port (and cluster bus port) with the same options, and waits until
  // it answers. The dataset is empty again; a cluster node keeps its
  // nodes.conf, so it rejoins with the same node id and slots.
  // kUnavailable if the port was taken meanwhile or the server does not come up.
  absl::Status Restart();
  // True while the process is alive (reaps it if it has exited).
  bool IsRunning();

  // Sends one command (AUTH first, on the same connection, if requirepass is
  // set) and renders the reply as text: integer as decimal, bulk and status
  // strings as is, nil as "(nil)", an array as its elements rendered the same
  // way and joined by "\n" (nested arrays flattened). An error reply is
  // kFailedPrecondition with the Redis message. Timeout 5 s.
  absl::StatusOr<std::string> Command(std::vector<std::string> args) const;
  // Like Command() but never sends AUTH (to test password enforcement).
  absl::StatusOr<std::string> CommandNoAuth(std::vector<std::string> args) const;

 private:
  explicit RedisServer(Options options) : options_(std::move(options)) {}

  // Starts the process on port_/cluster_bus_port_ and waits for it. On
  // failure the process is killed and `*port_in_use` says whether another
  // process held one of the ports (so a retry on other ports may help).
  absl::Status Launch(bool* port_in_use);

  Options options_;
  std::string dir_;
  std::string log_path_;
  int port_ = 0;
  int cluster_bus_port_ = 0;
  int tls_port_ = 0;
  pid_t pid_ = -1;  // -1 when not running (reaped)
};

// A Redis Cluster of N masters (no replicas), each a RedisServer with
// cluster_enabled, joined with `redis-cli --cluster create`.
//
// Thread-safety: as RedisServer; the cluster methods below only send commands
// and may run concurrently with each other, but not with node lifecycle calls.
class RedisCluster {
 public:
  // Starts `masters` (>= 3, redis-cli's minimum) nodes, creates the cluster
  // (at most 30 s) and waits at most 15 s until every node reports
  // cluster_state:ok, all 16384 slots assigned and all nodes known.
  // With `tls`, every node also listens with TLS (RedisServerTls) and the
  // cluster bus runs over TLS.
  static absl::StatusOr<std::unique_ptr<RedisCluster>> Start(
      int masters = 3, std::optional<RedisServerTls> tls = std::nullopt);

  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;
  ~RedisCluster();  // kills all nodes and removes their temp dirs

  RedisServer& node(int i) { return *nodes_.at(static_cast<size_t>(i)); }
  const RedisServer& node(int i) const { return *nodes_.at(static_cast<size_t>(i)); }
  int size() const { return static_cast<int>(nodes_.size()); }
  // The cluster node id (CLUSTER MYID) of node(i).
  const std::string& node_id(int i) const { return ids_.at(static_cast<size_t>(i)); }
  // "redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...", all nodes in order.
  std::string seeds_url() const;
  // "rediss+cluster://127.0.0.1:t1,...", the nodes' TLS ports (needs tls).
  std::string tls_seeds_url() const;

  // Index of the node that owns `slot` / the slot of `key`, according to
  // CLUSTER SLOTS of the first node that answers. kNotFound if unassigned.
  absl::StatusOr<int> NodeForSlot(int slot) const;
  absl::StatusOr<int> NodeForKey(const std::string& key) const;

  // Moves `slot` and its keys from node(from) to node(to): SETSLOT IMPORTING
  // on `to`, SETSLOT MIGRATING on `from`, GETKEYSINSLOT + MIGRATE ... KEYS in
  // batches, then SETSLOT NODE <to-id> on `to`, `from` and every other node.
  // Afterwards `from` answers MOVED for the slot's keys.
  absl::Status MigrateSlot(int slot, int from, int to);

  // DBSIZE of each node, in node order.
  absl::StatusOr<std::vector<int64_t>> KeysPerNode() const;

 private:
  RedisCluster() = default;

  absl::Status WaitUntilHealthy(std::chrono::milliseconds timeout) const;

  std::vector<std::unique_ptr<RedisServer>> nodes_;
  std::vector<std::string> ids_;
};

}  // namespace traffik::testing_redis
