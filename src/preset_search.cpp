#include "preset_search.h"

#include <unistd.h>

#include <cstdlib>
#include <sys/stat.h>

namespace bitnet {

namespace {

bool is_file(const std::string &path) {
    struct stat st{};
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string exe_dir() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "";
    std::string path(buf, static_cast<size_t>(n));
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? "" : path.substr(0, slash);
}

}  // namespace

std::vector<std::string> preset_candidates(const std::string &signature, const std::string &dir) {
    const std::string file = "/" + signature + ".json";
    if (const char *env = std::getenv("BITNET_PRESET_DIR"); env != nullptr && *env != '\0') return {env + file};
    std::vector<std::string> out;
    if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0')
        out.push_back(std::string(xdg) + "/bitnet/presets" + file);
    else if (const char *home = std::getenv("HOME"); home != nullptr && *home != '\0')
        out.push_back(std::string(home) + "/.cache/bitnet/presets" + file);
    if (!dir.empty()) {
        out.push_back(dir + "/../preset_kernels" + file);        // installed: bitnet/bin/ beside bitnet/preset_kernels/
        out.push_back(dir + "/../../../preset_kernels" + file);  // a checkout: build/<config>/bin/
    }
    return out;
}

std::string find_preset(const std::string &signature) {
    for (const std::string &path : preset_candidates(signature, exe_dir()))
        if (is_file(path)) return path;
    return "";
}

}  // namespace bitnet
