#include "debug_dump.h"

#include <sys/stat.h>

#include <cstdio>

namespace bitnet {

std::string dump_dir_problem(const std::string &dir) {
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return "dump folder " + dir + " does not exist (create it first)";
    if (!S_ISDIR(st.st_mode)) return "dump folder " + dir + " is not a folder";
    return "";
}

void dump_tensor(const std::string &dir, const char *name, int64_t layer, const float *data, int64_t rows,
                 int64_t cols) {
    char file_name[64];
    if (layer >= 0) std::snprintf(file_name, sizeof file_name, "/%02lld-%s.npy", static_cast<long long>(layer), name);
    else std::snprintf(file_name, sizeof file_name, "/out-%s.npy", name);
    std::FILE *f = std::fopen((dir + file_name).c_str(), "wb");
    if (f == nullptr) return;
    // .npy v1.0: magic, version, little-endian u16 header length, a Python dict literal padded
    // with spaces so that the data starts at a multiple of 64 bytes.
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                         std::to_string(cols) + "), }";
    const size_t unpadded = 10 + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
    const unsigned char preamble[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                  static_cast<unsigned char>(header.size() >> 8)};
    std::fwrite(preamble, 1, sizeof preamble, f);
    std::fwrite(len, 1, sizeof len, f);
    std::fwrite(header.data(), 1, header.size(), f);
    std::fwrite(data, sizeof(float), static_cast<size_t>(rows * cols), f);
    std::fclose(f);
}

}  // namespace bitnet
