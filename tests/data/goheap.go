// goheap.go writes goheap.pb.gz, the real Go heap profile that tests/cli.rs
// reads. It is kept here as documentation of how the fixture was made; the
// tests use only the committed .pb.gz (they never run Go).
//
// Regenerate (from the repository root, with Debian's golang-go 1.19):
//
//	go run -trimpath tests/data/goheap.go tests/data/goheap.pb.gz
//
// runtime.MemProfileRate = 1 records every allocation, so the profile is
// exact: main.retainBlocks holds 64 live blocks of 4096 bytes (262144 bytes in
// use), main.main holds their 1536-byte slice backing array, and
// main.churnBlocks allocated 32 blocks of 1024 bytes (32768 bytes) that are
// all garbage by the time of the profile. The runtime's own few allocations
// (goroutine stacks, GC workers) appear too.
package main

import (
	"os"
	"runtime"
	"runtime/pprof"
)

var retained [][]byte

//go:noinline
func retainBlocks(n int) {
	for i := 0; i < n; i++ {
		retained = append(retained, make([]byte, 4096))
	}
}

var sink []byte

//go:noinline
func churnBlocks(n int) {
	for i := 0; i < n; i++ {
		sink = make([]byte, 1024)
	}
	sink = nil
}

func main() {
	runtime.MemProfileRate = 1
	// Preallocate the slice header array so the only 4096-byte allocations
	// from retainBlocks are the blocks themselves.
	retained = make([][]byte, 0, 64)
	retainBlocks(64)
	churnBlocks(32)
	// A heap profile shows the state as of the last completed GC; two cycles
	// make sure frees are accounted for.
	runtime.GC()
	runtime.GC()
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		panic(err)
	}
	if err := f.Close(); err != nil {
		panic(err)
	}
	runtime.KeepAlive(retained)
}
