#include "runtime/range_list.h"

#include <charconv>

namespace ll::runtime {

std::optional<std::vector<std::pair<int64_t, int64_t>>> parse_range_list(std::string_view text, int64_t max_value) {
  auto number = [&](std::string_view s, int64_t& out) {
    if (s.empty() || s.size() > 18) return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && out >= 0 && out <= max_value;
  };
  std::vector<std::pair<int64_t, int64_t>> ranges;
  size_t at = 0;
  while (at <= text.size()) {
    size_t comma = text.find(',', at);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string_view item = text.substr(at, comma - at);
    const size_t dash = item.find('-');
    int64_t a = 0, b = 0;
    const bool ok = dash == std::string_view::npos
                        ? number(item, a) && (b = a, true)
                        : number(item.substr(0, dash), a) && number(item.substr(dash + 1), b);
    if (!ok || b < a) return std::nullopt;
    ranges.emplace_back(a, b);
    at = comma + 1;
  }
  return ranges;
}

}  // namespace ll::runtime
