#include "backend/redis/redis_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstdio>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

constexpr size_t kMaxQuotedPathBytes = 200;

std::string QuotePath(const std::string& path) {
  if (path.size() > kMaxQuotedPathBytes) {
    return absl::StrCat(
        "'", absl::CHexEscape(absl::string_view(path).substr(0, kMaxQuotedPathBytes)),
        "...'");
  }
  return absl::StrCat("'", absl::CHexEscape(path), "'");
}

// The OpenSSL error queue as one line (consumed); `fallback` when empty.
std::string DrainErrors(unsigned long first, const char* fallback) {
  std::string text;
  unsigned long error = first != 0 ? first : ERR_get_error();
  while (error != 0) {
    char buffer[256];
    ERR_error_string_n(error, buffer, sizeof(buffer));
    if (!text.empty()) text += "; ";
    text += buffer;
    error = ERR_get_error();
  }
  return text.empty() ? fallback : text;
}

absl::Status FieldError(const char* field, std::string* bad_field,
                        const std::string& message) {
  if (bad_field != nullptr) *bad_field = field;
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", message));
}

bool IsIpAddress(const std::string& name) {
  unsigned char buffer[16];
  return inet_pton(AF_INET, name.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, name.c_str(), buffer) == 1;
}

}  // namespace

void SslCtxDeleter::operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }

absl::StatusOr<SslCtxPtr> NewRedisTlsContext(const RedisTlsOptions& options,
                                             std::string* bad_field) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (ctx == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create a TLS context: ", DrainErrors(0, "out of memory")));
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  if (options.insecure_skip_verify) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  } else {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  if (!options.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx.get(), options.ca_file.c_str(), nullptr) != 1) {
      return FieldError(
          "ca_file", bad_field,
          absl::StrCat("cannot load CA certificates from ", QuotePath(options.ca_file),
                       ": ", DrainErrors(0, "no PEM certificate")));
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
    return FieldError("ca_file", bad_field,
                      absl::StrCat("cannot load the system trust store: ",
                                   DrainErrors(0, "unknown error")));
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return options.cert_file.empty()
               ? FieldError("cert_file", bad_field, "key_file is set, cert_file is not")
               : FieldError("key_file", bad_field, "cert_file is set, key_file is not");
  }
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), options.cert_file.c_str()) != 1) {
      return FieldError("cert_file", bad_field,
                        absl::StrCat("cannot load a PEM certificate chain from ",
                                     QuotePath(options.cert_file), ": ",
                                     DrainErrors(0, "unknown error")));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), options.key_file.c_str(),
                                    SSL_FILETYPE_PEM) != 1) {
      if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
        ERR_clear_error();
        return FieldError("key_file", bad_field,
                          absl::StrCat(QuotePath(options.key_file),
                                       " does not match the certificate of cert_file"));
      }
      return FieldError(
          "key_file", bad_field,
          absl::StrCat("cannot load a PEM private key from ", QuotePath(options.key_file),
                       ": ", DrainErrors(0, "unknown error")));
    }
    if (SSL_CTX_check_private_key(ctx.get()) != 1) {
      ERR_clear_error();
      return FieldError("key_file", bad_field,
                        absl::StrCat(QuotePath(options.key_file),
                                     " does not match the certificate of cert_file"));
    }
  }
  return ctx;
}

SSL* NewRedisTlsSession(SSL_CTX* ctx, const RedisTlsOptions& options,
                        const std::string& name) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr) return nullptr;
  const bool ip = IsIpAddress(name);
  // SNI carries DNS names only (RFC 6066); set even without verification so
  // a server choosing its certificate by name still picks the right one.
  if (!ip && !name.empty()) SSL_set_tlsext_host_name(ssl, name.c_str());
  if (!options.insecure_skip_verify) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                      : X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
    if (ok != 1) {
      SSL_free(ssl);
      ERR_clear_error();
      return nullptr;
    }
  }
  return ssl;
}

std::string DescribeRedisTlsFailure(SSL* ssl, unsigned long first_error) {
  if (ssl != nullptr) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      ERR_clear_error();
      return absl::StrCat("TLS handshake failed: certificate verify failed: ",
                          X509_verify_cert_error_string(verify));
    }
  }
  return absl::StrCat("TLS error: ", DrainErrors(first_error, "connection closed"));
}

}  // namespace traffik
