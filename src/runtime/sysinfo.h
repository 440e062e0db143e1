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
