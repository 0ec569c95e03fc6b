/* An Orb function in C (clang + wasi-libc):
 * greets the request body and reports the request's query string.
 *
 * Build: clang --target=wasm32-wasi --sysroot=/usr -O2 -o hello.wasm hello.c
 * (Debian: apt install clang lld wasi-libc)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = '\0';
    const char *query = getenv("QUERY_STRING");
    printf("hello from C, %s", buf);
    if (query && *query) {
        printf(" (query: %s)", query);
    }
    printf("\n");
    return 0;
}
