// "a-b,c,d-e" lists of non-negative integer ranges (unit ranges, CPU lists).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace ll::runtime {

// The ranges in order ("c" alone is c-c), or nullopt when an item is not "N" or "N-M" with
// 0 <= N <= M <= max_value.
std::optional<std::vector<std::pair<int64_t, int64_t>>> parse_range_list(std::string_view text, int64_t max_value);

}  // namespace ll::runtime
