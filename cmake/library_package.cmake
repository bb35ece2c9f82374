# The agent library as a package other projects use: find_package(message_agent CONFIG) gives
# message_agent::agent, pkg-config gives message_agent. Its headers go to
# include/message_agent/, its archives (the library, the protocol core and the one compiled copy
# of Boost.Asio it is built with) to lib/. `cmake --install BUILD --component library` installs
# only these.
include(CMakePackageConfigHelpers)
set(MA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/message_agent)

install(TARGETS ma_agent ma_core ma_asio ma_asio_ssl EXPORT message_agent_targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT library
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/message_agent DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT library)
install(EXPORT message_agent_targets NAMESPACE message_agent:: FILE message_agentTargets.cmake
        DESTINATION ${MA_CMAKE_DIR} COMPONENT library)
configure_package_config_file(cmake/message_agentConfig.cmake.in
  ${CMAKE_BINARY_DIR}/message_agentConfig.cmake INSTALL_DESTINATION ${MA_CMAKE_DIR})
# 0.x: a minor version may change the API.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/message_agentConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/message_agentConfig.cmake ${CMAKE_BINARY_DIR}/message_agentConfigVersion.cmake
        DESTINATION ${MA_CMAKE_DIR} COMPONENT library)
# pkg-config: the path variables are made relative to the prefix at install time.
install(CODE "
  set(prefix \"\${CMAKE_INSTALL_PREFIX}\")
  set(libdir \"\\\${prefix}/${CMAKE_INSTALL_LIBDIR}\")
  set(includedir \"\\\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}\")
  set(PROJECT_VERSION ${PROJECT_VERSION})
  configure_file(\"${PROJECT_SOURCE_DIR}/cmake/message_agent.pc.in\"
                 \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig/message_agent.pc\" @ONLY)
  message(STATUS \"Installing: \$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig/message_agent.pc\")
" COMPONENT library)
