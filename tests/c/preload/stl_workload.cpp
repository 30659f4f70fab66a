// stl_workload.cpp — a C++ program that leans on the STL the way real ones do:
// strings grown, copied and concatenated (memcpy/memmove under them), vectors
// resized and shifted (std::copy of trivial types is memmove), node containers,
// shared_ptr, std::function, a few threads; prints a deterministic digest, so
// its output under libnmm_preload.so can be compared with glibc's.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

static uint64_t mix(uint64_t h, uint64_t v)
{
    return (h ^ v) * 0x100000001b3ull;
}

static uint64_t strings(int n)
{
    uint64_t h = 1469598103934665603ull;
    std::vector<std::string> words;
    for (int i = 0; i < n; i++) {
        std::string w = "w" + std::to_string(i * 7919 % 10007);
        w.append(static_cast<size_t>(i % 37), static_cast<char>('a' + i % 26));
        words.push_back(w);
    }
    std::sort(words.begin(), words.end());
    std::string all;
    for (const auto &w : words) {
        all += w;
        all.insert(0, w.substr(0, 2));  // memmove of the whole string
    }
    std::ostringstream os;
    for (size_t i = 0; i < words.size(); i += 97)
        os << words[i] << ',';
    for (char c : all + os.str())
        h = mix(h, static_cast<unsigned char>(c));
    return h;
}

static uint64_t containers(int n)
{
    std::map<std::string, std::vector<int>> m;
    std::unordered_map<int, std::shared_ptr<std::string>> u;
    std::vector<int> v(static_cast<size_t>(n));
    std::iota(v.begin(), v.end(), 0);
    for (int i = 0; i < n; i++) {
        m["k" + std::to_string(i % 500)].push_back(i);
        u[i] = std::make_shared<std::string>(static_cast<size_t>(i % 50), 'x');
        if (i % 3 == 0)
            v.insert(v.begin() + i / 2, i);  // shifts the tail: memmove
        if (i % 5 == 0 && !v.empty())
            v.erase(v.begin());
    }
    std::vector<int> copy(v.size());
    std::copy(v.begin(), v.end(), copy.begin());
    uint64_t h = 0;
    for (const auto &kv : m)
        h = mix(h, kv.second.size() + kv.first.size());
    for (int i = 0; i < n; i += 13)
        h = mix(h, u[i]->size());
    for (int x : copy)
        h = mix(h, static_cast<uint64_t>(x));
    return h;
}

int main()
{
    std::vector<uint64_t> results(4);
    std::vector<std::thread> threads;
    std::vector<std::function<uint64_t()>> jobs = {
        [] { return strings(3000); }, [] { return containers(20000); },
        [] { return strings(1500); }, [] { return containers(5000); }};
    for (size_t i = 0; i < jobs.size(); i++)
        threads.emplace_back([&, i] { results[i] = jobs[i](); });
    for (auto &t : threads)
        t.join();
    for (uint64_t r : results)
        std::printf("%016llx\n", static_cast<unsigned long long>(r));
    return 0;
}
