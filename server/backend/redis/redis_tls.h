#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backend/redis/redis_options.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace traffik {

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const;
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// The client-side TLS context of a Redis backend: TLS 1.2 or newer; the
// server's chain verified against `ca_file` (else the system trust store)
// unless insecure_skip_verify; the client certificate and key loaded when
// given (and checked to match).
//
// Errors are kInvalidArgument, their message starting with the field at fault
// ("ca_file: ...", "cert_file: ...", "key_file: ..."), which `*bad_field`
// (when non-null) also receives. Paths are quoted and truncated, file contents
// never echoed.
absl::StatusOr<SslCtxPtr> NewRedisTlsContext(const RedisTlsOptions& options,
                                             std::string* bad_field = nullptr);

// A TLS session for one connection, from `ctx`: verifies that the server's
// certificate carries `name` (a DNS name: SAN/CN host match, also sent as SNI;
// an IPv4/IPv6 address: an IP SAN), unless insecure_skip_verify. nullptr when
// OpenSSL fails to allocate.
SSL* NewRedisTlsSession(SSL_CTX* ctx, const RedisTlsOptions& options,
                        const std::string& name);

// Why a TLS handshake or TLS I/O on `ssl` failed, for logs: the certificate
// verification result when that failed ("certificate verify failed:
// hostname mismatch"), else the queued OpenSSL errors (consumed). Never
// empty.
std::string DescribeRedisTlsFailure(SSL* ssl, unsigned long first_error);

}  // namespace traffik
