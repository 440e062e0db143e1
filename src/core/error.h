// Typed errors for every boundary (I/O, parsing, planning, peers).
// Expected<T> holds either a value or an Error; no exceptions on hot paths.
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace ll {

enum class ErrorCode {
  invalid_argument,  // caller passed something unusable
  io,                // open/read/write/mmap failed
  parse,             // malformed input (file or message)
  unsupported,       // well-formed but not something we implement
  out_of_range,      // index/size outside its limits
  not_found,         // missing key, tensor, file
  resource,          // memory or other resource exhausted
  internal,
};

const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::internal;
  std::string message;
};

inline Error make_error(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  Expected(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT(implicit)

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { check(); return std::get<0>(v_); }
  const T& value() const& { check(); return std::get<0>(v_); }
  T&& value() && { check(); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  void check() const {
    if (v_.index() != 0) std::abort();  // using a value that is an error is a bug
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT(implicit)
  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

}  // namespace ll

// Propagate an error from an Expected-returning expression.
#define LL_TRY(expr)                                        \
  do {                                                      \
    auto ll_try_r_ = (expr);                                \
    if (!ll_try_r_) return ll_try_r_.error();               \
  } while (0)

#define LL_CONCAT_INNER(a, b) a##b
#define LL_CONCAT(a, b) LL_CONCAT_INNER(a, b)
#define LL_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                              \
  if (!tmp) return tmp.error();                   \
  decl = std::move(tmp).value()
// LL_ASSIGN_OR_RETURN(auto x, f());
#define LL_ASSIGN_OR_RETURN(decl, expr) LL_ASSIGN_OR_RETURN_IMPL(LL_CONCAT(ll_aor_, __LINE__), decl, expr)
