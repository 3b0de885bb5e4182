# `make package`: one .deb with the daemon, rvoip-eventctl, the library with its headers, CMake and
# pkg-config files, the unit, sysusers and tmpfiles files. The Makefile configures its tree for /usr, so
# the paths configured into the unit and the libdir (multiarch) are Debian's; the package installs where
# the tree was configured to.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME rvoip-events)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "host-local shared-memory event broker for a VoIP stack")
set(CPACK_PACKAGE_DESCRIPTION "rvoip-eventd passes events between the processes of a VoIP stack
through shared-memory rings in four priority lanes, Critical first. The package
holds the broker (a systemd service), rvoip-eventctl to inspect it, and
librvoip-events with its headers, CMake package and pkg-config file.")
set(RVOIP_PACKAGE_MAINTAINER "rvoip-events maintainers <maintainers@users.noreply.r-seed-75d4905f.example>"
    CACHE STRING "Maintainer: field of the .deb")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${RVOIP_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Depends: from what the binaries link (dpkg-shlibdeps), and a shlibs file for librvoip-events.so.0.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_STRIP_FILES ON)
# postinst creates the user and the socket directory, then enables and starts the broker only when
# systemd runs (a container or a chroot has none); prerm stops it on removal.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_SOURCE_DIR}/packaging/debian/postinst
                                       ${CMAKE_SOURCE_DIR}/packaging/debian/prerm
                                       ${CMAKE_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
