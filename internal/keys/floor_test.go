package keys

import "testing"

func TestFloorWeakerMax(t *testing.T) {
	floor := FloorKDF()
	if floor.Weaker(DefaultKDF()) || floor.Validate() != nil {
		t.Fatalf("floor %v is below the default %v", floor, DefaultKDF())
	}
	if !TestKDF().Weaker(floor) {
		t.Fatal("TestKDF is not below the floor: tests would not need to lower it")
	}
	d := DefaultKDF()
	for _, p := range []KDFParams{
		{Time: d.Time - 1, MemoryKiB: d.MemoryKiB * 2, Threads: d.Threads * 2},
		{Time: d.Time * 2, MemoryKiB: d.MemoryKiB - 1, Threads: d.Threads * 2},
		{Time: d.Time * 2, MemoryKiB: d.MemoryKiB * 2, Threads: d.Threads - 1},
	} {
		if !p.Weaker(d) {
			t.Errorf("%v is not weaker than %v (one field lower is weaker)", p, d)
		}
		if m := MaxKDF(p, d); m.Weaker(p) || m.Weaker(d) || m.Validate() != nil {
			t.Errorf("MaxKDF(%v, %v) = %v", p, d, m)
		}
	}
	if d.Weaker(d) {
		t.Error("equal parameters are weaker")
	}
	if s := (KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}).String(); s != "t=1 m=64KiB p=1" {
		t.Errorf("String: %q", s)
	}
}
