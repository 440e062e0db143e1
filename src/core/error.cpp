#include "core/error.h"

namespace ll {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid argument";
    case ErrorCode::io: return "I/O error";
    case ErrorCode::parse: return "parse error";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::out_of_range: return "out of range";
    case ErrorCode::not_found: return "not found";
    case ErrorCode::resource: return "resource exhausted";
    case ErrorCode::internal: return "internal error";
  }
  return "error";
}

}  // namespace ll
