#include "net/sha256.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>

namespace ll::net {

namespace {

// EVP failures cannot happen with a valid context and the built-in digest: treat them as bugs.
void check_evp(int ok, const char* what) {
  if (ok == 1) return;
  std::fprintf(stderr, "fatal: OpenSSL %s failed for SHA-256\n", what);
  std::abort();
}

EVP_MD_CTX* new_ctx() {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) check_evp(0, "EVP_MD_CTX_new");
  return ctx;
}

}  // namespace

void Sha256::CtxDeleter::operator()(evp_md_ctx_st* ctx) const {
  EVP_MD_CTX_free(ctx);
}

Sha256::Sha256() : ctx_(new_ctx()) {
  reset();
}

Sha256::Sha256(const Sha256& other) : Sha256() {
  if (other.ctx_) check_evp(EVP_MD_CTX_copy_ex(ctx_.get(), other.ctx_.get()), "EVP_MD_CTX_copy_ex");
}

Sha256& Sha256::operator=(const Sha256& other) {
  if (this == &other) return *this;
  if (!other.ctx_) {
    reset();
    return *this;
  }
  check_evp(EVP_MD_CTX_copy_ex(ctx(), other.ctx_.get()), "EVP_MD_CTX_copy_ex");
  return *this;
}

evp_md_ctx_st* Sha256::ctx() {
  if (!ctx_) {
    ctx_.reset(new_ctx());
    check_evp(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
  }
  return ctx_.get();
}

void Sha256::reset() {
  check_evp(EVP_DigestInit_ex(ctx(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
}

void Sha256::update(std::span<const uint8_t> data) {
  if (data.empty()) return;  // data() may be null for an empty span
  check_evp(EVP_DigestUpdate(ctx(), data.data(), data.size()), "EVP_DigestUpdate");
}

Sha256Digest Sha256::finish() {
  Sha256Digest out;
  unsigned int n = 0;
  check_evp(EVP_DigestFinal_ex(ctx(), out.data(), &n), "EVP_DigestFinal_ex");
  if (n != out.size()) check_evp(0, "EVP_DigestFinal_ex (digest length)");
  reset();
  return out;
}

Sha256Digest sha256(std::span<const uint8_t> data) {
  Sha256 h;
  h.update(data);
  return h.finish();
}

Sha256Digest sha256(std::string_view s) {
  return sha256(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

std::string to_hex(const Sha256Digest& d) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    s[2 * i] = k_digits[d[i] >> 4];
    s[2 * i + 1] = k_digits[d[i] & 15];
  }
  return s;
}

}  // namespace ll::net
