// What a device reports about itself: resident memory, available memory.
#pragma once

#include <cstdint>

namespace ll::runtime {

// Resident set size of this process now (/proc/self/statm), 0 when unknown.
uint64_t current_rss_bytes();
// Peak resident set size of this process (getrusage), 0 when unknown.
uint64_t peak_rss_bytes();
// Memory the system can give without swapping (/proc/meminfo MemAvailable), 0 when unknown.
uint64_t available_memory_bytes();

}  // namespace ll::runtime

#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace ll::runtime {

// The CPUs this process may run on (sched_getaffinity), in increasing order.
std::vector<int> allowed_cpus();
// Parses "0,2-3" into {0, 2, 3}.
Expected<std::vector<int>> parse_cpu_list(std::string_view text);
// "0,2-3"
std::string format_cpu_list(const std::vector<int>& cpus);
// Restricts this process's threads created from now on (and the calling thread) to `cpus`.
Expected<void> pin_to_cpus(const std::vector<int>& cpus);

}  // namespace ll::runtime
