;; hello.wat: the smallest useful Orb function.
;;
;; Writes "hello, " and then everything it reads on stdin to stdout, so
;; `curl -d world http://127.0.0.1:7780/fn/hello` answers "hello, world".
;; It needs only two WASI calls, fd_read and fd_write, and copies the input
;; through a 64 KiB buffer, so inputs of any size stream through.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; Layout: iovec {ptr, len} at 0, byte count at 8, prefix at 16, buffer at 1024.
  (data (i32.const 16) "hello, ")
  (func (export "_start")
    (local $n i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 7))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (block $done
      (loop $more
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 65536))
        ;; A non-zero errno or a zero-byte read ends the input.
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (i32.store (i32.const 4) (local.get $n))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br $more))))
)
