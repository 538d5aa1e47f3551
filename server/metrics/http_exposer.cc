#include "metrics/http_exposer.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/host_port.h"

namespace traffik {

// One accepted connection, from the bufferevent evhttp asked us for until
// evhttp reports the connection closed (OnClosed).
struct HttpExposer::Connection {
  HttpExposer* owner = nullptr;
  bufferevent* bev = nullptr;          // what evhttp reads and writes
  evhttp_connection* evcon = nullptr;  // set by Adopt
  event* deadline = nullptr;  // adoption (at once), head deadline, write deadline
  std::list<Connection*>::iterator position;
  bool adopted = false;    // closecb set: OnClosed will run
  bool head_done = false;  // the request head has been read
  bool closing = false;    // to be closed; no longer counted against the cap
  std::chrono::steady_clock::time_point accepted;
};

namespace {

timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// Bytes received on the connection's socket that nobody has read yet; 0 when
// unknown.
int UnreadBytes(bufferevent* bev) {
  const evutil_socket_t fd = bufferevent_getfd(bev);
  int pending = 0;
  if (fd < 0 || ::ioctl(fd, FIONREAD, &pending) != 0) return 0;
  return pending;
}

const char* MethodName(evhttp_cmd_type type) {
  switch (type) {
    case EVHTTP_REQ_GET:
      return "GET";
    case EVHTTP_REQ_POST:
      return "POST";
    case EVHTTP_REQ_HEAD:
      return "HEAD";
    case EVHTTP_REQ_PUT:
      return "PUT";
    case EVHTTP_REQ_DELETE:
      return "DELETE";
    case EVHTTP_REQ_OPTIONS:
      return "OPTIONS";
    case EVHTTP_REQ_TRACE:
      return "TRACE";
    case EVHTTP_REQ_CONNECT:
      return "CONNECT";
    case EVHTTP_REQ_PATCH:
      return "PATCH";
  }
  return "";
}

constexpr char kThreadName[] = "metrics-http";

}  // namespace

MetricsRoute RouteMetricsRequest(std::string_view method, std::string_view target) {
  std::string_view path = target;
  // absolute-form ("http://host:port/metrics"): drop scheme and authority.
  for (std::string_view scheme : {"http://", "https://"}) {
    if (path.size() >= scheme.size() &&
        absl::EqualsIgnoreCase(absl::string_view(path.data(), scheme.size()),
                               absl::string_view(scheme.data(), scheme.size()))) {
      path.remove_prefix(scheme.size());
      const size_t slash = path.find('/');
      path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
      break;
    }
  }
  if (const size_t end = path.find_first_of("?#"); end != std::string_view::npos) {
    path = path.substr(0, end);
  }
  MetricsRoute route;
  if (path != "/metrics") {
    route.status = 404;
    route.reason = "Not Found";
  } else if (method == "GET" || method == "HEAD") {
    route.status = 200;
    route.reason = "OK";
    route.serve_metrics = true;
    route.head_only = method == "HEAD";
  } else {
    route.status = 405;
    route.reason = "Method Not Allowed";
  }
  return route;
}

absl::StatusOr<std::unique_ptr<HttpExposer>> HttpExposer::Start(
    const std::string& address, std::function<std::string()> render,
    const HttpExposerOptions& options) {
  const HostPort parts = SplitHostPort(address, /*port_required=*/true);
  if (parts.problem == HostPortProblem::kBadPort ||
      parts.problem == HostPortProblem::kEmptyPort) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "' has a bad port"));
  }
  if (!parts.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "' is not HOST:PORT"));
  }
  const std::string& host = parts.host;
  const std::string port_text = absl::StrCat(parts.port);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve metrics address '",
                                                   address, "': ", ::gai_strerror(rc)));
  }
  int fd = -1;
  std::string last_error = "no usable address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                  ai->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0)
      break;
    last_error = std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(found);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for metrics on ", address, ": ", last_error));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int bound_port = bound.ss_family == AF_INET6
                             ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                             : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  std::unique_ptr<HttpExposer> exposer(
      new HttpExposer(bound_port, std::move(render), options));
  if (absl::Status status = exposer->Init(fd); !status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat("metrics on ", address, ": ", status.message()));
  }
  return exposer;
}

HttpExposer::HttpExposer(int port, std::function<std::string()> render,
                         const HttpExposerOptions& options)
    : port_(port), render_(std::move(render)), options_(options) {}

absl::Status HttpExposer::Init(int listen_fd) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    ::close(listen_fd);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  wake_read_ = pipe_fds[0];
  wake_write_ = pipe_fds[1];
  base_ = event_base_new();
  if (base_ == nullptr) {
    ::close(listen_fd);
    return absl::InternalError("event_base_new failed");
  }
  http_ = evhttp_new(base_);
  if (http_ == nullptr) {
    ::close(listen_fd);
    return absl::InternalError("evhttp_new failed");
  }
  const auto head_bytes = static_cast<ev_ssize_t>(options_.max_head_bytes);
  evhttp_set_max_headers_size(http_, head_bytes);
  evhttp_set_max_body_size(http_, head_bytes);
  // Every method reaches OnRequest, so /metrics answers 405 rather than
  // evhttp's 501 for the ones it does not allow by default.
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                        EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                        EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
  evhttp_set_gencb(http_, &HttpExposer::OnRequest, this);
  evhttp_set_bevcb(http_, &HttpExposer::NewConnection, this);
  // evhttp owns the socket from here (closes it in evhttp_free).
  if (evhttp_accept_socket_with_handle(http_, listen_fd) == nullptr) {
    ::close(listen_fd);
    return absl::InternalError("evhttp_accept_socket failed");
  }
  wake_event_ =
      event_new(base_, wake_read_, EV_READ | EV_PERSIST, &HttpExposer::OnWake, this);
  if (wake_event_ == nullptr || event_add(wake_event_, nullptr) != 0) {
    return absl::InternalError("event_add failed");
  }
  thread_ = std::thread([this] {
    // libevent writes with writev(): a client that vanished mid-answer must
    // give EPIPE on this thread, not kill the process.
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
    event_base_dispatch(base_);
  });
  pthread_setname_np(thread_.native_handle(), kThreadName);
  return absl::OkStatus();
}

HttpExposer::~HttpExposer() {
  if (thread_.joinable()) {
    const char byte = 1;
    (void)!::write(wake_write_, &byte, 1);
    thread_.join();
  }
  // The loop has stopped: nothing below waits on a client. evhttp closes the
  // listener and every connection without flushing.
  if (http_ != nullptr) evhttp_free(http_);  // OnClosed for each connection
  // Accepted on the last iteration but never adopted.
  while (!connections_.empty()) {
    Connection* connection = connections_.front();
    bufferevent* bev = connection->bev;
    Forget(connection);
    bufferevent_decref(bev);
  }
  if (wake_event_ != nullptr) event_free(wake_event_);
  if (base_ != nullptr) event_base_free(base_);
  if (wake_read_ >= 0) ::close(wake_read_);
  if (wake_write_ >= 0) ::close(wake_write_);
}

void HttpExposer::OnWake(int, short, void* self) {
  event_base_loopbreak(static_cast<HttpExposer*>(self)->base_);
}

bufferevent* HttpExposer::NewConnection(event_base* base, void* self_arg) {
  auto* self = static_cast<HttpExposer*>(self_arg);
  // At the cap, make room by closing the oldest idle connection (PickIdle).
  // Connections accepted moments ago may not have sent their head yet and
  // cannot be told from idle ones: when none is idle the new one is let in
  // over the cap, and the cap is enforced again as connections are adopted
  // or arrive. At the hard cap the oldest connection waiting for its head
  // goes at once.
  const size_t open = self->OpenCount();
  if (open >= self->options_.max_connections) {
    Connection* victim = self->PickIdle();
    if (victim == nullptr && open >= self->HardCap()) victim = self->PickVictim();
    if (victim != nullptr) self->Evict(victim);
  }

  bufferevent* bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
  if (bev == nullptr) return nullptr;
  auto* connection = new Connection;
  connection->owner = self;
  connection->accepted = std::chrono::steady_clock::now();
  connection->bev = bev;
  connection->deadline = evtimer_new(base, &HttpExposer::OnDeadline, connection);
  if (connection->deadline == nullptr) {
    bufferevent_free(bev);
    delete connection;
    return nullptr;
  }
  // evhttp 2.1 creates the connection object only after this callback and
  // offers no accept hook; Adopt() finds it through the bufferevent's
  // callback argument on this loop iteration, before any byte is read. The
  // extra reference keeps `bev` valid until then even if evhttp gives up on
  // the connection at once.
  bufferevent_incref(bev);
  event_active(connection->deadline, EV_TIMEOUT, 0);
  connection->position = self->connections_.insert(self->connections_.end(), connection);
  self->by_bufferevent_[bev] = connection;
  if (self->options_.max_connections == 0) connection->closing = true;
  return bev;
}

void HttpExposer::Forget(Connection* connection) {
  by_bufferevent_.erase(connection->bev);
  connections_.erase(connection->position);
  if (connection->deadline != nullptr) event_free(connection->deadline);
  delete connection;
}

size_t HttpExposer::OpenCount() const {
  size_t open = 0;
  for (const Connection* c : connections_) open += c->closing ? 0 : 1;
  return open;
}

size_t HttpExposer::HardCap() const { return 2 * options_.max_connections + 64; }

// The oldest idle connection: read, its request head incomplete, no unread
// byte in its socket (evhttp has everything the client sent and waits for
// more: a half-open or trickling client). A scrape sends its head at once, so
// by the time it is adopted its head waits in its socket and it is not picked:
// clients that reconnect as fast as they are closed cannot starve scrapes.
// A client that has just connected may not have sent its head yet (its
// thread preempted between connect and send): only connections older than
// options_.idle_grace count as idle.
HttpExposer::Connection* HttpExposer::PickIdle() const {
  const auto old_enough = std::chrono::steady_clock::now() - options_.idle_grace;
  for (Connection* c : connections_) {
    if (c->accepted > old_enough) break;  // in age order: the rest are younger
    if (!c->closing && c->adopted && !c->head_done && UnreadBytes(c->bev) == 0) return c;
  }
  return nullptr;
}

// At the hard cap: the oldest connection with nothing unread that is still
// waiting for its head, else the oldest waiting, else the oldest (a client
// slow to read its answer).
HttpExposer::Connection* HttpExposer::PickVictim() const {
  Connection* waiting = nullptr;
  Connection* oldest = nullptr;
  for (Connection* c : connections_) {
    if (c->closing) continue;
    if (oldest == nullptr) oldest = c;
    if (c->head_done) continue;
    if (UnreadBytes(c->bev) == 0) return c;
    if (waiting == nullptr) waiting = c;
  }
  return waiting != nullptr ? waiting : oldest;
}

void HttpExposer::Evict(Connection* connection) {
  connection->closing = true;
  // Closed from its own deadline event, outside evhttp's callbacks.
  event_active(connection->deadline, EV_TIMEOUT, 0);
}

void HttpExposer::Adopt(Connection* connection) {
  bufferevent_data_cb read_cb = nullptr;
  bufferevent_data_cb write_cb = nullptr;
  bufferevent_event_cb event_cb = nullptr;
  void* evcon = nullptr;
  bufferevent_getcb(connection->bev, &read_cb, &write_cb, &event_cb, &evcon);
  bufferevent* bev = connection->bev;
  if (event_cb == nullptr || evcon == nullptr) {
    // evhttp failed to set the connection up and freed it already.
    Forget(connection);
    bufferevent_decref(bev);
    return;
  }
  connection->evcon = static_cast<evhttp_connection*>(evcon);
  connection->adopted = true;
  evhttp_connection_set_closecb(connection->evcon, &HttpExposer::OnClosed, connection);
  bufferevent_decref(bev);  // evhttp holds its own
  // Over the cap (connections let in on a busy accept turn, or while every
  // connection was younger than idle_grace): close idle ones, oldest first.
  while (!connection->closing && OpenCount() > options_.max_connections) {
    Connection* victim = PickIdle();
    if (victim == nullptr) break;
    if (victim == connection) {
      connection->closing = true;
    } else {
      Evict(victim);
    }
  }
  if (connection->closing) {
    Close(connection);
    return;
  }
  const timeval head = ToTimeval(options_.head_timeout);
  evtimer_add(connection->deadline, &head);
}

void HttpExposer::OnClosed(evhttp_connection*, void* connection_arg) {
  auto* connection = static_cast<Connection*>(connection_arg);
  connection->owner->Forget(connection);
}

void HttpExposer::OnDeadline(int, short, void* connection_arg) {
  auto* connection = static_cast<Connection*>(connection_arg);
  if (!connection->adopted) {
    connection->owner->Adopt(connection);
  } else {
    connection->owner->Close(connection);
  }
}

void HttpExposer::Close(Connection* connection) {
  // Reset rather than linger: unsent bytes of a client that does not read
  // are dropped at once instead of held by the kernel.
  const evutil_socket_t fd = bufferevent_getfd(connection->bev);
  if (fd >= 0) {
    const linger reset{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  }
  // Runs OnClosed, which deletes `connection`.
  evhttp_connection_free(connection->evcon);
}

void HttpExposer::OnRequest(evhttp_request* request, void* self_arg) {
  auto* self = static_cast<HttpExposer*>(self_arg);
  evhttp_connection* evcon = evhttp_request_get_connection(request);
  if (evcon != nullptr) {
    auto it = self->by_bufferevent_.find(evhttp_connection_get_bufferevent(evcon));
    if (it != self->by_bufferevent_.end() && !it->second->closing) {
      Connection* connection = it->second;
      connection->head_done = true;
      const timeval write = ToTimeval(self->options_.write_timeout);
      evtimer_add(connection->deadline, &write);  // replaces the head deadline
    }
  }
  const char* uri = evhttp_request_get_uri(request);
  MetricsRoute route = RouteMetricsRequest(
      MethodName(evhttp_request_get_command(request)), uri == nullptr ? "" : uri);
  // evhttp accepts any version numbers ("HTTP/0.1", "HTTP/1.99999...", found
  // by the fuzzer) and answers in the request's own: only 1.0 and 1.1 are
  // served, anything else gets 505 written as HTTP/1.1.
  if (request->major != 1 || (request->minor != 0 && request->minor != 1)) {
    request->major = 1;
    request->minor = 1;
    route = MetricsRoute{505, "HTTP Version Not Supported", false, false};
  }
  evkeyvalq* headers = evhttp_request_get_output_headers(request);
  evhttp_add_header(headers, "Connection", "close");
  evbuffer* body = evbuffer_new();
  if (route.serve_metrics) {
    evhttp_add_header(headers, "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    if (!route.head_only) {
      const std::string text = self->render_();
      evbuffer_add(body, text.data(), text.size());
    }
  } else {
    evhttp_add_header(headers, "Content-Type", "text/plain; charset=utf-8");
    if (route.status == 405) {
      evhttp_add_header(headers, "Allow", "GET, HEAD");
      evbuffer_add_printf(body, "use GET\n");
    } else if (route.status == 505) {
      evbuffer_add_printf(body, "use HTTP/1.1\n");
    } else {
      evbuffer_add_printf(body, "not found; try /metrics\n");
    }
  }
  evhttp_send_reply(request, route.status, route.reason, body);
  evbuffer_free(body);
}

}  // namespace traffik
