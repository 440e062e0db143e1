// Reading small files whose content is untrusted (key files, cluster files, profiles).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/error.h"

namespace ll {

// The whole of the regular file at `path`, which may hold at most `max_bytes`: a larger file is
// refused while it is read, never loaded whole. `what` names what it should be in that error
// ("PATH: larger than N bytes: not a key file"). `private_only`: refuse a file that others than its
// owner may read (secret keys), checked on the opened file, so nothing can change between the
// check and the read.
Expected<std::string> read_small_file(const std::string& path, size_t max_bytes, std::string_view what,
                                      bool private_only = false);

}  // namespace ll
