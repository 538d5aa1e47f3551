set terminal pngcairo size 1200,480 font ",10"
set output "throughput.png"
set multiplot layout 1,2 title "Traffik on 2 cores (client, server and Redis on one machine)"
set logscale x 2
set xrange [0.8:330]
set xtics (1, 16, 64, 256)
set xlabel "calls in flight"
set key left top
set grid
set logscale y 10
set ylabel "decisions/s"
set title "Throughput"
plot "noop.dat" using 1:2 with linespoints title "no-op server (calls/s)",      "memory.dat" using 1:2 with linespoints title "traffikd memory",      "redis.dat" using 1:2 with linespoints title "traffikd Redis",      "batch10.dat" using 1:2 with linespoints title "batch of 10 (memory)",      "batch100.dat" using 1:2 with linespoints title "batch of 100 (memory)"
set title "p99 latency per call"
set ylabel "p99 (us)"
plot "noop.dat" using 1:3 with linespoints title "no-op server",      "memory.dat" using 1:3 with linespoints title "traffikd memory",      "redis.dat" using 1:3 with linespoints title "traffikd Redis",      "batch10.dat" using 1:3 with linespoints title "batch of 10",      "batch100.dat" using 1:3 with linespoints title "batch of 100"
unset multiplot
