#include "runtime/split.h"

#include "runtime/range_list.h"

namespace ll::runtime {

namespace {

Error bad(std::string what) { return make_error(ErrorCode::invalid_argument, std::move(what)); }

std::string range_text(const Stage& s) {
  return std::to_string(s.first_unit) + "-" + std::to_string(s.last_unit);
}

// Units [first, last] cut into n contiguous parts by cumulative weight, part i ending where the
// cumulative share first reaches share[0..i]; every part gets at least one unit.
std::vector<std::pair<int64_t, int64_t>> cut_by_weight(int64_t first, int64_t last,
                                                       const std::vector<double>& unit_weight,
                                                       const std::vector<double>& share) {
  const int n = static_cast<int>(share.size());
  double total_share = 0;
  for (double s : share) total_share += s;
  double total_weight = 0;
  for (int64_t u = first; u <= last; ++u) total_weight += unit_weight[static_cast<size_t>(u)];
  std::vector<std::pair<int64_t, int64_t>> parts;
  int64_t begin = first;
  double cum_share = 0, cum_weight = 0;
  for (int i = 0; i < n; ++i) {
    cum_share += share[static_cast<size_t>(i)];
    const int64_t parts_after = n - 1 - i;
    const int64_t max_end = last - parts_after;  // leave one unit for each later part
    int64_t end = begin;
    cum_weight += unit_weight[static_cast<size_t>(begin)];
    const double target = total_weight * cum_share / total_share;
    // Extend while the next unit's midpoint stays within the target share.
    while (end < max_end) {
      const double w = unit_weight[static_cast<size_t>(end + 1)];
      if (cum_weight + w / 2 > target + 1e-9 * total_weight) break;
      cum_weight += w;
      ++end;
    }
    if (i == n - 1) {
      for (int64_t u = end + 1; u <= last; ++u) cum_weight += unit_weight[static_cast<size_t>(u)];
      end = last;
    }
    parts.emplace_back(begin, end);
    begin = end + 1;
  }
  return parts;
}

std::vector<Stage> assemble(int64_t n_units, bool ring, const std::vector<std::pair<int64_t, int64_t>>& worker_parts) {
  std::vector<Stage> stages;
  stages.push_back(Stage{0, 0, 0});
  int device = 1;
  for (auto [a, b] : worker_parts) stages.push_back(Stage{device++, static_cast<int>(a), static_cast<int>(b)});
  if (ring) stages.push_back(Stage{0, static_cast<int>(n_units - 1), static_cast<int>(n_units - 1)});
  return stages;
}

Expected<void> check_counts(int64_t n_units, int n_workers, bool ring) {
  if (n_workers < 1) return bad("a pipeline needs at least one worker");
  const int64_t worker_units = n_units - 1 - (ring ? 1 : 0);
  if (worker_units < n_workers) {
    return bad("the model has " + std::to_string(n_units) + " units; " + std::to_string(worker_units) +
               " can go to workers" + (ring ? " (the origin keeps the embedding and the head)" :
                                              " (the origin keeps the embedding)") +
               ", fewer than the " + std::to_string(n_workers) + " workers");
  }
  return {};
}

}  // namespace

Expected<void> validate_split(const std::vector<Stage>& stages, int64_t n_units, int n_workers, bool ring) {
  if (stages.empty()) return bad("the split has no ranges");
  if (stages.front().device != 0) return bad("the first stage must be on the origin");
  if (ring && stages.back().device != 0) return bad("with --ring the last stage must be on the origin");
  std::vector<bool> used(static_cast<size_t>(std::max(n_workers, 0)) + 1, false);
  for (size_t i = 0; i < stages.size(); ++i) {
    const Stage& s = stages[i];
    const bool origin_stage = i == 0 || (ring && i + 1 == stages.size());
    if (origin_stage) continue;
    if (s.device < 1 || s.device > n_workers) {
      return bad("stage " + std::to_string(i) + " names device " + std::to_string(s.device) + " but there are " +
                 std::to_string(n_workers) + " workers");
    }
    if (used[static_cast<size_t>(s.device)]) {
      return bad("worker " + std::to_string(s.device) + " has two stages (a worker runs one contiguous range)");
    }
    used[static_cast<size_t>(s.device)] = true;
  }
  int64_t next = 0;
  for (size_t i = 0; i < stages.size(); ++i) {
    const Stage& s = stages[i];
    if (s.first_unit != next) {
      return bad("range " + range_text(s) + " should start at unit " + std::to_string(next) +
                 " (ranges must be contiguous and start at 0)");
    }
    if (s.last_unit < s.first_unit) return bad("range " + range_text(s) + " is empty");
    if (s.last_unit >= n_units) {
      return bad("range " + range_text(s) + " goes past the model's last unit " + std::to_string(n_units - 1));
    }
    next = s.last_unit + 1;
  }
  if (next != n_units) {
    return bad("the ranges end at unit " + std::to_string(next - 1) + " but the model's last unit is " +
               std::to_string(n_units - 1));
  }
  return {};
}

Expected<std::vector<Stage>> split_even(int64_t n_units, int n_workers, bool ring) {
  LL_TRY(check_counts(n_units, n_workers, ring));
  // Transformer blocks are what costs; spread them, and let the head (a fraction of a block's work
  // in prefill) ride with the last worker. With more workers than blocks, spread units instead.
  const int64_t n_blocks = n_units - 2;
  const bool head_rides = !ring && n_workers <= n_blocks;
  const int64_t first = 1, last = n_units - 1 - (ring || head_rides ? 1 : 0);
  const int64_t count = last - first + 1;
  std::vector<std::pair<int64_t, int64_t>> parts;
  int64_t begin = first;
  for (int i = 0; i < n_workers; ++i) {
    const int64_t n = count / n_workers + (i < count % n_workers ? 1 : 0);
    parts.emplace_back(begin, begin + n - 1);
    begin += n;
  }
  if (head_rides) parts.back().second = n_units - 1;
  auto stages = assemble(n_units, ring, parts);
  LL_TRY(validate_split(stages, n_units, n_workers, ring));
  return stages;
}

Expected<std::vector<Stage>> split_memory(const std::vector<uint64_t>& unit_bytes,
                                          const std::vector<uint64_t>& worker_memory, bool ring) {
  const int64_t n_units = static_cast<int64_t>(unit_bytes.size());
  const int n_workers = static_cast<int>(worker_memory.size());
  LL_TRY(check_counts(n_units, n_workers, ring));
  std::vector<double> weight(unit_bytes.begin(), unit_bytes.end());
  std::vector<double> share;
  for (uint64_t m : worker_memory) {
    if (m == 0) return bad("a worker reported no memory; use --split even or --split-units");
    share.push_back(static_cast<double>(m));
  }
  auto stages = assemble(n_units, ring, cut_by_weight(1, n_units - 1 - (ring ? 1 : 0), weight, share));
  LL_TRY(validate_split(stages, n_units, n_workers, ring));
  return stages;
}

Expected<std::vector<Stage>> parse_split_units(std::string_view text, int64_t n_units, int n_workers, bool ring) {
  const auto parsed = parse_range_list(text, int64_t{1} << 30);
  if (!parsed) {
    return bad("--split-units: '" + std::string(text) + "' is not a list of unit ranges like 0-0,1-11,12-23");
  }
  const auto& ranges = *parsed;
  const size_t want = static_cast<size_t>(n_workers) + 1 + (ring ? 1 : 0);
  if (ranges.size() != want) {
    return bad("--split-units " + std::string(text) + ": the split has " + std::to_string(ranges.size()) +
               " ranges, expected " + std::to_string(want) + " (the origin's first, then one per worker" +
               (ring ? ", then the origin's again with --ring)" : ")"));
  }
  std::vector<Stage> stages;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const bool origin_stage = i == 0 || (ring && i + 1 == ranges.size());
    stages.push_back(Stage{origin_stage ? 0 : static_cast<int>(i), static_cast<int>(ranges[i].first),
                           static_cast<int>(ranges[i].second)});
  }
  auto ok = validate_split(stages, n_units, n_workers, ring);
  if (!ok) return bad("--split-units " + std::string(text) + ": " + ok.error().message);
  return stages;
}

std::string format_split(const std::vector<Stage>& stages) {
  std::string s;
  for (const Stage& st : stages) {
    if (!s.empty()) s += ',';
    s += range_text(st);
  }
  return s;
}

}  // namespace ll::runtime
