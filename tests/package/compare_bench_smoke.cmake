# Runs compare-bench once with small sizes; fails unless it exits 0 with a row for every
# workload and a ratio column for each peer.
execute_process(
  COMMAND ${BENCH} --runs 1 --w1 5000 --w2 2000 --w3 200 --w4 1000 --w5 100 --w6 2000
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE status TIMEOUT 500)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "compare-bench failed (${status}):\n${err}\n${out}")
endif()
foreach(row "| w1 | msg/s" "| w2 | msg/s" "| w3 | p50 us" "| w4 | deliveries/s" "| w5 | KiB/connection"
            "| w6 | drain s" "ours vs mosquitto" "ours vs nats")
  string(FIND "${out}" "${row}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "compare-bench printed no '${row}':\n${out}")
  endif()
endforeach()
message(STATUS "${out}")
