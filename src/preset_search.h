// Which kernel preset a native program (bitnet-bench) applies: the one the Python package would
// (bitnet/paths.py), so that the benchmark measures what run_inference.py and the server run.
//   $BITNET_PRESET_DIR/<cpu>.json when that variable is set (nothing else);
//   else this user's tuned one ($XDG_CACHE_HOME, or ~/.cache, /bitnet/presets/<cpu>.json),
//   then the shipped one: preset_kernels/ beside an installed bitnet/bin/, or a checkout's (three
//   folders above build/<config>/bin/).
#pragma once
#include <string>
#include <vector>

namespace bitnet {

// Candidate files, in order, for this CPU signature; exe_dir is the folder of the running binary.
std::vector<std::string> preset_candidates(const std::string &signature, const std::string &exe_dir);

// The first candidate that exists, or "".
std::string find_preset(const std::string &signature);

}  // namespace bitnet
